"""The model card's "How to use" snippet: Python that loads the published repo from the hub it went to
(HF_ENDPOINT and HF_TOKEN in the environment) and prints a label name or generated text.

What loads the artifact depends on what it is:
- peft adapters (LoRA, QLoRA, IA3, ...): peft's Auto classes. peft builds the base model from the base
  repo's own config, whose head has its default size (2 labels): a classifier passes the label maps from
  the config.json saved beside the adapter, so the head fits and ``model.config.id2label`` names them.
- full fine-tunes: transformers' Auto classes (the repo is a whole model; its config names the labels).
- hubtune's bottleneck adapters (no peft method): hubtune's own loader, which needs hubtune installed.
Causal LMs use the tokenizer pushed with the model, so chat prompts go through the chat template the job
trained with, not whatever the base repo holds today.
"""

from __future__ import annotations

PEFT_CLASSES = {
    "sequence_classification": "AutoPeftModelForSequenceClassification",
    "causal_lm": "AutoPeftModelForCausalLM",
}
TRANSFORMERS_CLASSES = {
    "sequence_classification": "AutoModelForSequenceClassification",
    "causal_lm": "AutoModelForCausalLM",
}
EXAMPLE_TEXT = "Some text to classify"
EXAMPLE_PROMPT = "Hello!"


def usage_snippet(*, repo_id: str, base_model: str, base_model_revision: str | None, task: str,
                  library_name: str, data_format: str | None = None, branch: str | None = None) -> str:
    """The snippet for `repo_id` (at `branch` when it is not main). `library_name` is what the artifact
    is: "peft", "transformers" (a whole model) or "hubtune" (bottleneck adapters); `data_format` the
    job's training data ("chat" renders the prompt with the chat template)."""
    at = f', revision="{branch}"' if branch and branch != "main" else ""
    if library_name == "hubtune":
        lines = _hubtune_loader(repo_id, at, base_model, base_model_revision, task)
    elif library_name == "peft":
        lines = _auto_loader(repo_id, at, task, "peft", PEFT_CLASSES.get(task, "AutoPeftModel"))
    else:
        lines = _auto_loader(repo_id, at, task, "transformers", TRANSFORMERS_CLASSES.get(task, "AutoModel"))
    return "\n".join(lines + _prediction(task, data_format))


def _auto_loader(repo_id: str, at: str, task: str, module: str, cls: str) -> list[str]:
    lines = [f"from {module} import {cls}"]
    if module == "peft" and task == "sequence_classification":
        lines += [
            "from transformers import AutoConfig, AutoTokenizer",
            "",
            "# config.json beside the adapter holds the labels; peft sizes the base model's head from them.",
            f'labels = AutoConfig.from_pretrained("{repo_id}"{at})',
            f"model = {cls}.from_pretrained(",
            f'    "{repo_id}"{at}, id2label=labels.id2label, label2id=labels.label2id',
            ")",
        ]
    else:
        lines += ["from transformers import AutoTokenizer", "", f'model = {cls}.from_pretrained("{repo_id}"{at})']
    what = "with the chat template it trained with" if task == "causal_lm" else "the tokenizer it was trained with"
    return lines + [f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}"{at})  # {what}']


def _hubtune_loader(repo_id: str, at: str, base_model: str, revision: str | None, task: str) -> list[str]:
    return [
        "# Bottleneck adapters are hubtune's own format (peft has no such method): they load with hubtune's",
        "# loader (the hubtune package installed), onto the base model at the commit they were trained on.",
        "from huggingface_hub import snapshot_download",
        "from worker.engine.trainer import load_for_inference",
        "",
        "model, tokenizer = load_for_inference(",
        f'    model_dir=snapshot_download("{base_model}", revision="{revision or "main"}"),',
        f'    adapter_dir=snapshot_download("{repo_id}"{at}),',
        f'    task="{task}",',
        ")",
    ]


def _prediction(task: str, data_format: str | None) -> list[str]:
    if task == "sequence_classification":
        return [f'inputs = tokenizer("{EXAMPLE_TEXT}", return_tensors="pt")',
                "print(model.config.id2label[model(**inputs).logits.argmax(-1).item()])"]
    if data_format == "chat":
        inputs = [f'messages = [{{"role": "user", "content": "{EXAMPLE_PROMPT}"}}]',
                  "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, "
                  "return_tensors=\"pt\", return_dict=True)"]
    else:
        inputs = [f'inputs = tokenizer("{EXAMPLE_PROMPT}", return_tensors="pt")']
    # input_ids and attention_mask only: some tokenizers add token_type_ids, which generate() refuses.
    return inputs + ['output = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], '
                     "max_new_tokens=32)",
                     'print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))']
