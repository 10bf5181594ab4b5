import pytest
import yaml
from huggingface_hub import ModelCard

from plugin import InvalidRepoId, render_model_card

BASE = "sentence-transformers/all-MiniLM-L6-v2"


def card(**overrides) -> str:
    kwargs = dict(
        repo_id="acme/tickets-minilm-lora",
        base_model=BASE,
        base_model_revision="c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
        task="sequence_classification",
        tuning={"type": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["query", "value"]},
        hyperparameters={"n_epochs": 3, "batch_size": 16, "learning_rate": 0.0002, "num_labels": 4},
        datasets=["acme/tickets"],
        metrics={"base": {"accuracy": 0.25, "f1": 0.1}, "tuned": {"accuracy": 0.91, "f1": 0.875}},
        tags=["support"],
        license="apache-2.0",
    )
    kwargs.update(overrides)
    return render_model_card(**kwargs)


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_card_parses_with_huggingface_hub_and_carries_the_metadata():
    data = ModelCard(card()).data

    assert data.base_model == BASE
    assert data.library_name == "peft"
    assert data.pipeline_tag == "text-classification"
    assert data.license == "apache-2.0"
    assert data.datasets == ["acme/tickets"]
    assert {"hubtune", "lora", "peft", "support"} <= set(data.tags)
    assert data.model_name == "tickets-minilm-lora"
    results = {r.metric_type: r.metric_value for r in data.eval_results}
    assert results == {"accuracy": 0.91, "f1": 0.875}  # the tuned model's own results, not the base's
    assert {r.dataset_name for r in data.eval_results} == {"acme/tickets"}
    assert {r.task_type for r in data.eval_results} == {"text-classification"}


def test_body_has_usage_configuration_and_metrics():
    text = ModelCard(card()).text

    assert "from peft import AutoPeftModelForSequenceClassification" in text
    assert 'labels = AutoConfig.from_pretrained("acme/tickets-minilm-lora")' in text
    assert '"acme/tickets-minilm-lora", id2label=labels.id2label, label2id=labels.label2id' in text
    assert 'AutoTokenizer.from_pretrained("acme/tickets-minilm-lora")' in text  # pushed with the model
    assert "print(model.config.id2label[model(**inputs).logits.argmax(-1).item()])" in text
    assert "| tuning.r | 8 |" in text
    assert "| tuning.target_modules | query, value |" in text
    assert "| learning_rate | 0.0002 |" in text
    assert "| base model revision | c9745ed1d9f207416be6d2e6f8de32d1f16199bf |" in text
    assert "| Metric | base | tuned |" in text
    assert "| accuracy | 0.25 | 0.91 |" in text


def test_causal_lm_card():
    text = card(task="causal_lm", metrics={"eval_loss": 1.25}, hyperparameters={})
    data = ModelCard(text).data
    assert data.pipeline_tag == "text-generation"
    assert "text-generation" in data.tags
    assert "AutoPeftModelForCausalLM.from_pretrained(\"acme/tickets-minilm-lora\")" in text
    assert "model.generate(" in text
    assert "SequenceClassification" not in text
    assert [(r.metric_type, r.metric_value) for r in data.eval_results] == [("eval_loss", 1.25)]
    assert "| eval_loss | 1.25 |" in text


def test_full_fine_tune_with_transformers():
    text = card(library_name="transformers", tuning={"type": "full"})
    data = ModelCard(text).data
    assert data.library_name == "transformers"
    assert "full-fine-tuning" in data.tags and "peft" not in data.tags
    assert "from transformers import AutoModelForSequenceClassification" in text


def test_base_model_is_always_a_hub_id():
    data = ModelCard(card(base_model=f"{BASE}@main", base_model_revision=None)).data
    assert data.base_model == BASE
    assert "| base model revision | main |" in card(base_model=f"{BASE}@main", base_model_revision=None)
    for local_path in ("/data/hub/models/acme/x/objects/abc", "./checkpoints/base", "C:\\models\\x"):
        with pytest.raises(InvalidRepoId):
            card(base_model=local_path)


def test_optional_parts_are_left_out():
    text = card(datasets=[], metrics={}, license=None, tags=[])
    meta = front_matter(text)
    assert "datasets" not in meta and "model-index" not in meta and "license" not in meta
    assert "## Evaluation" not in text
    assert ModelCard(text).data.eval_results is None


def test_model_index_without_datasets_names_a_custom_eval_set():
    data = ModelCard(card(datasets=[], metrics={"accuracy": 0.5, "note": "n/a"})).data
    assert [(r.metric_type, r.metric_value, r.dataset_type) for r in data.eval_results] == [("accuracy", 0.5, "custom")]


def test_awkward_values_survive_yaml_and_markdown():
    text = card(
        tags=["base_model:adapter:x", "a: b", "#hash"],
        hyperparameters={"note": "a|b\nc", "weights": {"a": 1}},
        license="other",
    )
    meta = front_matter(text)
    assert {"base_model:adapter:x", "a: b", "#hash"} <= set(meta["tags"])
    assert meta["tags"].count("hubtune") == 1
    assert "| note | a\\|b c |" in text
    assert '| weights | {"a": 1} |' in text


def test_custom_usage_snippet():
    text = card(usage_snippet="print('hello')\n")
    assert "```python\nprint('hello')\n```" in text
    assert "AutoPeftModel" not in text


def test_numpy_like_floats_become_plain_yaml_numbers():
    class Float32(float):  # stands in for numpy.float32 & co: a numbers.Real that is not a built-in
        pass

    meta = front_matter(card(metrics={"accuracy": Float32(0.75)}))
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.75


def test_numpy_metrics():
    import numpy as np

    data = ModelCard(card(metrics={"accuracy": np.float32(0.5), "steps": np.int64(10)})).data
    assert {r.metric_type: r.metric_value for r in data.eval_results} == {"accuracy": 0.5, "steps": 10.0}


def snippet(text: str) -> str:
    code = text.split("## How to use\n\n```python\n", 1)[1].split("\n```", 1)[0]
    compile(code, "snippet", "exec")  # every variant is valid Python
    return code


def test_causal_lm_snippet_prompts_through_the_trained_chat_template_and_prints_new_tokens():
    chat = snippet(card(task="causal_lm", data_format="chat"))
    assert 'tokenizer = AutoTokenizer.from_pretrained("acme/tickets-minilm-lora")' in chat
    assert "tokenizer.apply_chat_template(messages, add_generation_prompt=True" in chat
    assert 'output[0][inputs["input_ids"].shape[1]:]' in chat
    completion = snippet(card(task="causal_lm", data_format="completion"))
    assert "apply_chat_template" not in completion and 'tokenizer("Hello!", return_tensors="pt")' in completion


def test_snippet_for_each_kind_of_artifact():
    full = snippet(card(library_name="transformers", tuning={"type": "full"}))
    assert 'AutoModelForSequenceClassification.from_pretrained("acme/tickets-minilm-lora")' in full
    assert "AutoConfig" not in full  # a whole model's own config names its labels
    adapter = snippet(card(library_name="hubtune", tuning={"type": "adapter"}))
    assert "from worker.engine.trainer import load_for_inference" in adapter
    assert f'snapshot_download("{BASE}", revision="c9745ed1d9f207416be6d2e6f8de32d1f16199bf")' in adapter
    assert "model.config.id2label[" in adapter


def test_snippet_loads_the_branch_it_was_pushed_to():
    code = snippet(card(branch="release"))
    assert code.count('"acme/tickets-minilm-lora", revision="release"') == 3  # labels, model, tokenizer
    assert 'revision="release"' not in snippet(card(branch="main"))


def test_readme_use_your_model_shows_the_cards_snippets():
    import pathlib
    import re

    from plugin.usage import usage_snippet

    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Use your model\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)\n```", section, re.S)
    common = dict(base_model=BASE, base_model_revision=None, library_name="peft")
    assert blocks == [
        usage_snippet(repo_id="acme/tickets-lora", task="sequence_classification", **common),
        usage_snippet(repo_id="acme/support-chat-lora", task="causal_lm", data_format="chat", **common),
    ]


def evaluation(**overrides) -> dict:
    ev = {"split": {"source": "held_out", "examples": 40, "fraction": 0.1}, "primary_metric": "macro_f1",
          "base": {"macro_f1": 0.71, "accuracy": 0.72}, "tuned": {"macro_f1": 0.9, "accuracy": 0.91},
          "base_kind": "linear_probe", "majority_baseline": {"macro_f1": 0.17, "accuracy": 0.33},
          "beat_baseline": True, "goal": None, "samples": []}
    ev.update(overrides)
    return ev


def test_classifier_baseline_is_labelled_as_a_linear_probe_and_explained():
    text = card(metrics={}, evaluation=evaluation())
    assert "| Metric | majority-class baseline | linear probe (base model embeddings) | fine-tuned |" in text
    assert "logistic regression fitted on the training split" in text
    assert "Sample completions" not in text
    names = {m["name"]: m["value"] for m in front_matter(text)["model-index"][0]["results"][0]["metrics"]}
    assert names["macro_f1 (linear probe (base model embeddings))"] == 0.71 and names["macro_f1"] == 0.9
    old = card(metrics={}, evaluation=evaluation(base_kind="base_model"))  # a causal LM's base is the model itself
    assert "| majority-class baseline | base model | fine-tuned |" in old and "linear probe" not in old


def test_sample_completions_are_fenced_so_markdown_cannot_break():
    nasty = "```\n# Not a heading\n</code><script>alert(1)</script> | cell"
    samples = [{"prompt": "Q: colour red?", "reference": " red red", "base": nasty, "tuned": "red ````x"}]
    text = card(task="causal_lm", metrics={}, evaluation=evaluation(
        primary_metric="valid_loss", base={"valid_loss": 2.5}, tuned={"valid_loss": 1.1}, base_kind="base_model",
        majority_baseline=None, samples=samples))
    section = text.split("## Sample completions\n", 1)[1]
    assert "### Sample 1" in section and "**Base model**" in section and "**Fine-tuned**" in section
    assert f"````text\n{nasty}\n````\n" in section  # a fence longer than the text's own backticks
    assert "`````text\nred ````x\n`````\n" in section
    assert "```text\n Q: colour red?\n```" not in section and "```text\nQ: colour red?\n```" in section
    import markdown_it  # the Hub's renderer is CommonMark: the text must stay inside its code block

    html = markdown_it.MarkdownIt().render(section)
    assert "<script>" not in html and "&lt;script&gt;" in html and "<h1>Not a heading" not in html
    ModelCard(text)  # still parses
