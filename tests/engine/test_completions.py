"""Base vs tuned sample completions of a causal LM on evaluation prompts."""

from __future__ import annotations

import json

from hubtune.spec import Training, Tuning
from tests.engine.conftest import RecordingHooks
from testkit.tiny_models import write_completion_jsonl
from worker.engine.completions import MAX_CHARS, N_SAMPLES, generate, sample_prompts, sample_records
from worker.engine.data import load_examples
from worker.engine.trainer import load_base_model, load_tokenizer, train


def test_a_full_fine_tune_records_base_completions_generated_before_training(tmp_path, tiny_llama, make_plan):
    # Full fine-tuning changes the weights in place: base completions generated after training would
    # equal the tuned ones. They differ, and the base ones are what the untouched model says.
    train_file = write_completion_jsonl(tmp_path / "c.jsonl", 32)
    valid_file = write_completion_jsonl(tmp_path / "v.jsonl", 6, seed=4)
    hp = {"n_epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "learning_rate_multiplier": 1.0}
    plan = make_plan(task="causal_lm", model_dir=tiny_llama, train_file=train_file, valid_file=valid_file, seed=5,
                     tuning=Tuning(type="full"), training=Training(max_seq_length=32), hyperparameters=hp)
    result = train(plan, RecordingHooks())
    samples = result.evaluation["samples"]
    print("samples:", json.dumps(samples), "timings:", result.metrics["timings_s"])
    rows = load_examples(valid_file, task="causal_lm", param="validation_file").rows
    assert [s["prompt"] for s in samples] == [r["prompt"] for r in rows[:N_SAMPLES]]
    assert [s["reference"] for s in samples] == [r["completion"].strip() for r in rows[:N_SAMPLES]]
    tokenizer = load_tokenizer(tiny_llama)
    untouched, _ = load_base_model(tiny_llama, task="causal_lm", tokenizer=tokenizer)
    expected_base = generate(untouched, tokenizer, [r["prompt"] for r in rows[:N_SAMPLES]], max_length=32)
    trimmed = sample_records(samples, base=expected_base, tuned=expected_base)  # cut to MAX_CHARS as recorded
    assert [s["base"] for s in samples] == [t["base"] for t in trimmed]
    assert any(s["base"] != s["tuned"] for s in samples)
    assert all(s["tuned"] for s in samples)
    assert result.metrics["timings_s"]["samples_s"] > 0


def test_chat_prompts_are_rendered_up_to_the_last_assistant_turn(tmp_path, llama_tokenizer):
    from testkit.tiny_models import write_chat_jsonl

    examples = load_examples(write_chat_jsonl(tmp_path / "chat.jsonl", 4), task=None, param="training_file")
    prompts = sample_prompts(examples, tokenizer=llama_tokenizer)
    assert len(prompts) == N_SAMPLES
    messages = examples.rows[0]["messages"]
    rendered = llama_tokenizer.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in messages[:-1]], tokenize=False, add_generation_prompt=True)
    assert prompts[0] == {"prompt": rendered, "reference": messages[-1]["content"]}


def test_greedy_generation_is_deterministic(tiny_llama):
    tokenizer = load_tokenizer(tiny_llama)
    model, _ = load_base_model(tiny_llama, task="causal_lm", tokenizer=tokenizer)
    model.train()
    first = generate(model, tokenizer, ["colour red means", "colour blue means"], max_length=32, max_new_tokens=8)
    assert first == generate(model, tokenizer, ["colour red means", "colour blue means"], max_length=32,
                             max_new_tokens=8)
    assert model.training  # restored
    assert len(first) == 2 and all(first)


def test_records_are_trimmed_keeping_the_prompts_end():
    long_prompt = "x" * 500 + " the question?"
    (record,) = sample_records([{"prompt": long_prompt, "reference": "r" * 400}], base=["b" * 1000], tuned=[" ok "])
    assert len(record["prompt"]) == MAX_CHARS and record["prompt"].endswith(" the question?")
    assert record["prompt"].startswith("…") and record["reference"].endswith("…")
    assert len(record["base"]) == MAX_CHARS and record["tuned"] == "ok"
