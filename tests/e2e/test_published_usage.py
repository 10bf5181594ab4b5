"""Issue 14 item 5: a published model is usable as published. Real server + Celery worker processes on
PostgreSQL + Redis train tiny jobs and publish them over HTTP (the unmodified huggingface_hub client)
to the hub-compatible test server; the "How to use" snippet of each pushed README.md then runs as
written in a fresh Python process that knows only HF_ENDPOINT and HF_TOKEN."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download

from testkit.tiny_models import (
    TINY_CHAT_TEMPLATE,
    make_tiny_bert,
    make_tiny_llama,
    write_chat_jsonl,
    write_jsonl,
)
from testkit.hubserver import HubServer
from testkit.services import postgres_database, redis_url
from testkit.stack import Stack, upload, wait_for

pytestmark = pytest.mark.e2e
HUB_TOKEN = "usage-e2e-token"
LABELS = {"sports": ["goal", "match", "team"], "weather": ["rain", "sunny", "storm"],
          "finance": ["stock", "bank", "price"]}
# The base repo's chat template after the job trained: the snippet must keep the one it trained with.
LATER_TEMPLATE = "{% for message in messages %}[{{ message['role'] }}] {{ message['content'] }}{% endfor %}"
SNIPPET = re.compile(r"## How to use\n\n```python\n(.*?)\n```", re.S)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("usage-e2e")
    with postgres_database("hubtune_usage") as db_url, HubServer(root / "hub-server", token=HUB_TOKEN) as hub:
        stack = Stack(root, {
            "HUBTUNE_DATABASE_URL": db_url, "HUBTUNE_BROKER_URL": redis_url(14),
            "HUBTUNE_HUB_BACKEND": "hf", "HUBTUNE_HUB_ENDPOINT": hub.url, "HUBTUNE_HUB_TOKEN": HUB_TOKEN,
            "HF_HUB_DISABLE_XET": "1", "HUBTUNE_HEARTBEAT_SECONDS": "1",
        })
        stack.run("hub", "import", str(make_tiny_bert(root / "tiny-bert")), "tiny/bert")
        stack.run("hub", "import", str(make_tiny_llama(root / "tiny-llama")), "tiny/llama")
        stack.start()
        key = stack.run("keys", "create", "--name", "alice").strip()
        try:
            yield {"stack": stack, "hub": hub, "key": key, "root": root}
        finally:
            stack.stop()


def _three_topics(path: Path, n: int = 36) -> Path:
    rng = random.Random(4)
    rows = [{"text": f"the {rng.choice(LABELS[label])} was {rng.choice(['big', 'new', 'odd'])} today",
             "label": label} for label in LABELS for _ in range(n // len(LABELS))]
    rng.shuffle(rows)
    return write_jsonl(path, rows)


def _train_and_publish(env, name: str, data: Path, **body) -> tuple[str, dict]:
    client = env["stack"].client(env["key"])
    response = client.post("/fine_tuning/jobs", json={
        "training_file": upload(client, data), "seed": 3, "hub": {"repo_id": f"alice/{name}"}, **body})
    assert response.status_code == 200, response.text
    job = wait_for(client, response.json()["id"], stack=env["stack"])
    assert job["status"] == "succeeded", (job["error"], env["stack"].logs())
    return job["fine_tuned_model"].split("@")[0], job


def _card_snippet(env, repo_id: str) -> str:
    readme = hf_hub_download(repo_id, "README.md", endpoint=env["hub"].url, token=HUB_TOKEN,
                             cache_dir=env["root"] / "cache-cards")
    match = SNIPPET.search(Path(readme).read_text())
    assert match, Path(readme).read_text()
    return match.group(1)


def _run_as_a_user(env, snippet: str, probe: str, name: str) -> tuple[str, dict]:
    """Run `snippet` as written, then `probe` (which prints one JSON line about the snippet's variables),
    in a fresh process whose only hub settings are HF_ENDPOINT and HF_TOKEN (empty cache, online)."""
    user_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBTUNE_", "TRANSFORMERS_"))}
    user_env.update(HF_ENDPOINT=env["hub"].url, HF_TOKEN=HUB_TOKEN, HF_HUB_DISABLE_XET="1",
                    HF_HOME=str(env["root"] / f"user-{name}"))
    code = snippet + "\n\nimport json as _json\nprint('PROBE ' + _json.dumps(" + probe + "))\n"
    out = subprocess.run([sys.executable, "-"], input=code, env=user_env, cwd=env["root"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"the card's snippet failed:\n{snippet}\n--- stderr ---\n{out.stderr[-4000:]}"
    lines = out.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("PROBE "), out.stdout
    return (lines[-2] if len(lines) > 1 else ""), json.loads(lines[-1][len("PROBE "):])


@pytest.mark.parametrize("kind", ["lora", "ia3", "adapter", "full"])
def test_a_three_class_card_snippet_prints_a_label_name(env, kind):
    repo_id, job = _train_and_publish(
        env, f"topics-{kind}", _three_topics(env["root"] / f"topics-{kind}.jsonl"),
        model="tiny/bert", task="sequence_classification", tuning={"type": kind},
        training={"learning_rate": 0.01, "max_seq_length": 32}, hyperparameters={"n_epochs": 1, "batch_size": 8})
    snippet = _card_snippet(env, repo_id)
    printed, probe = _run_as_a_user(
        env, snippet, "{'id2label': model.config.id2label, 'width': model(**inputs).logits.shape[-1]}", kind)
    assert printed in LABELS, (printed, snippet)
    assert probe == {"id2label": {"0": "finance", "1": "sports", "2": "weather"}, "width": 3}
    if kind in ("lora", "ia3"):
        # peft's own Auto class, with the labels the repo carries (config.json beside the adapter).
        assert "AutoPeftModelForSequenceClassification.from_pretrained(" in snippet
        assert f'AutoConfig.from_pretrained("{repo_id}")' in snippet
        config = json.loads(Path(hf_hub_download(repo_id, "adapter_config.json", endpoint=env["hub"].url,
                                                 token=HUB_TOKEN, cache_dir=env["root"] / "cache-cards")).read_text())
        assert config["base_model_name_or_path"] == "tiny/bert" and config["revision"] == job["model_revision"]
    elif kind == "full":
        assert f'AutoModelForSequenceClassification.from_pretrained("{repo_id}")' in snippet
    else:
        assert "load_for_inference(" in snippet and job["model_revision"] in snippet


def test_a_causal_lm_card_snippet_generates_through_the_chat_template_it_trained_with(env):
    hub = env["hub"]
    repo_id, job = _train_and_publish(
        env, "chat-lora", write_chat_jsonl(env["root"] / "chat.jsonl", 32),
        model="tiny/llama", task="causal_lm", tuning={"type": "lora"},
        training={"learning_rate": 0.03, "max_seq_length": 64}, hyperparameters={"n_epochs": 4, "batch_size": 8})
    # The base repo moves on after training: a user of the card still prompts the way the model learned.
    hub.hub.commit("tiny/llama", files={"chat_template.jinja": LATER_TEMPLATE.encode()}, message="new template",
                   branch="main")
    snippet = _card_snippet(env, repo_id)
    assert "apply_chat_template(" in snippet, snippet
    printed, probe = _run_as_a_user(
        env, snippet, "{'chat_template': tokenizer.chat_template, 'new_tokens': int(output.shape[1] - "
        "inputs['input_ids'].shape[1])}", "chat")
    assert probe["chat_template"] == TINY_CHAT_TEMPLATE
    assert probe["new_tokens"] > 0 and printed.strip(), (printed, probe)  # generated text, prompt left out
