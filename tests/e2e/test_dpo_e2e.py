"""Issue 18 §1 end to end: with the official `openai` client, a DPO job in OpenAI's exact shape trains the
real SmolLM2-135M-Instruct (LoRA) on preference pairs built from chatterbot-corpus's real chats, on a real
server + Celery worker over PostgreSQL + Redis, and publishes to the hub-compatible test server. On the
held-out pairs the tuned model (downloaded from the hub) prefers the preferred reply more often than the
base model did, measured here with this test's own log-probability code (not trl's, not the engine's)."""

from __future__ import annotations

import json
import time

import openai
import pytest
import torch
from huggingface_hub import snapshot_download

from bench.real_data import chatterbot_preference_pairs
from bench.real_models import smollm2_dir
from testkit.hubserver import HubServer
from testkit.real_data import real
from testkit.services import postgres_database, redis_url
from testkit.stack import Stack, wait_for

pytestmark = pytest.mark.e2e
HUB_TOKEN = "dpo-e2e-token"
REDIS_DB = 5
BASE_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
MAX_LEN = 96


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@torch.no_grad()
def _reply_logprob(model, tokenizer, messages: list[dict], reply: str) -> float:
    """log p(reply | conversation), summed over the reply's tokens, as the chat template renders it."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": reply}], tokenize=False)
    assert full.startswith(prompt)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    picked = logprobs[torch.arange(len(targets)), targets]
    return float(picked[n_prompt - 1:].sum())


def _preference_accuracy(model, tokenizer, rows: list[dict]) -> float:
    model.eval()
    wins = 0
    for row in rows:
        messages = row["input"]["messages"]
        good = _reply_logprob(model, tokenizer, messages, row["preferred_output"][0]["content"])
        bad = _reply_logprob(model, tokenizer, messages, row["non_preferred_output"][0]["content"])
        wins += good > bad
    return wins / len(rows)


def test_dpo_job_in_openai_shape_makes_smollm2_prefer_the_preferred_replies(tmp_path):
    base_dir = real(smollm2_dir)
    train_rows, test_rows = real(chatterbot_preference_pairs, 40, 16, seed=7)
    with postgres_database("hubtune_dpo") as db_url, HubServer(tmp_path / "hub-server", token=HUB_TOKEN) as hub:
        stack = Stack(tmp_path, {
            "HUBTUNE_DATABASE_URL": db_url, "HUBTUNE_BROKER_URL": redis_url(REDIS_DB),
            "HUBTUNE_HUB_BACKEND": "hf", "HUBTUNE_HUB_ENDPOINT": hub.url, "HUBTUNE_HUB_TOKEN": HUB_TOKEN,
            "HF_HUB_DISABLE_XET": "1", "HUBTUNE_HEARTBEAT_SECONDS": "2",
        })
        stack.run("hub", "import", str(base_dir), BASE_REPO)
        stack.start()
        key = stack.run("keys", "create", "--name", "alice").strip()
        try:
            client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0)
            train_file = client.files.create(file=_jsonl(tmp_path / "train.jsonl", train_rows).open("rb"),
                                             purpose="fine-tune")
            valid_file = client.files.create(file=_jsonl(tmp_path / "valid.jsonl", test_rows).open("rb"),
                                             purpose="fine-tune")
            # A row that is not a pair: a 400-free create, then a failed job naming the line.
            bad_rows = train_rows[:3] + [{"input": {"messages": [{"role": "user", "content": "hi"}]},
                                          "preferred_output": [{"role": "user", "content": "hello"}],
                                          "non_preferred_output": [{"role": "assistant", "content": "no"}]}]
            bad_file = client.files.create(file=_jsonl(tmp_path / "bad.jsonl", bad_rows).open("rb"),
                                           purpose="fine-tune")
            with pytest.raises(openai.BadRequestError) as refused:
                client.fine_tuning.jobs.create(model=BASE_REPO, training_file=train_file.id,
                                               method={"type": "reinforcement"})
            assert "reinforcement" in refused.value.message and "not supported" in refused.value.message

            started = time.monotonic()
            job = client.fine_tuning.jobs.create(
                model=BASE_REPO, training_file=train_file.id, validation_file=valid_file.id, seed=3,
                method={"type": "dpo", "dpo": {"hyperparameters": {
                    "beta": 0.1, "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 5}}},
                extra_body={"tuning": {"type": "lora", "r": 8, "alpha": 16},
                            "training": {"max_seq_length": MAX_LEN}, "hub": {"repo_id": "alice/smollm2-dpo"}},
            )
            bad = client.fine_tuning.jobs.create(model=BASE_REPO, training_file=bad_file.id,
                                                 method={"type": "dpo"})
            assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.1
            http = stack.client(key)
            done = wait_for(http, job.id, stack=stack, timeout=1200)
            seconds = time.monotonic() - started
            assert done["status"] == "succeeded", (done["error"], stack.logs())
            failed = wait_for(http, bad.id, stack=stack)
            events = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
            series = http.get(f"/fine_tuning/jobs/{job.id}/metrics", params={"limit": 1000}).json()["data"]
            retrieved = client.fine_tuning.jobs.retrieve(job.id)
        finally:
            stack.stop()
        adapter_dir = snapshot_download("alice/smollm2-dpo", endpoint=hub.url, token=HUB_TOKEN,
                                        cache_dir=tmp_path / "hub-cache")

    assert failed["status"] == "failed" and failed["error"]["param"] == "training_file"
    assert failed["error"]["message"].startswith("line 4:") and "preferred_output[0].role" in failed["error"]["message"]
    # The job object echoes OpenAI's method shape with the resolved hyperparameters.
    assert retrieved.method.type == "dpo"
    assert retrieved.method.dpo.hyperparameters.n_epochs == 2 and retrieved.method.dpo.hyperparameters.beta == 0.1
    # DPO's metrics ride on the step events: rewards and preference accuracy, for training and validation.
    keys = set().union(*(p["data"] for p in series))
    assert {"train_rewards_chosen", "train_rewards_rejected", "train_rewards_margin", "train_preference_accuracy",
            "valid_rewards_margin", "valid_preference_accuracy"} <= keys, keys
    assert any(e.message.startswith("Baseline") and "preference_accuracy" in e.message for e in events)
    # The card has the DPO section.
    card = open(f"{adapter_dir}/README.md").read()
    assert "## Preference tuning (DPO)" in card and "beta = 0.1" in card

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    before = _preference_accuracy(base, tokenizer, test_rows)
    tuned = PeftModel.from_pretrained(base, adapter_dir)
    after = _preference_accuracy(tuned, tokenizer, test_rows)
    evaluation = done["result"]["evaluation"]
    print(f"dpo e2e: held-out preference accuracy base {before:.3f} -> tuned {after:.3f} "
          f"(job's own: {evaluation['base']['preference_accuracy']:.3f} -> "
          f"{evaluation['tuned']['preference_accuracy']:.3f}); job {seconds:.0f} s")
    assert after > before
    assert evaluation["primary_metric"] == "preference_accuracy" and evaluation["beat_baseline"] is True
