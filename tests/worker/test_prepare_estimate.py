"""The estimate endpoint and prepare give the same figure for the same body and training file: the body
goes to POST /v1/fine_tuning/jobs/estimate and, as a job, through a real prepare (in-process, on a tmp
SQLite database and local hub) on the real file; the estimate prepare routed by is the endpoint's."""

from __future__ import annotations

import time
from importlib import resources

import pytest
from sqlalchemy import select

from hubtune.models import Job, JobEvent, WorkerRecord
from hubtune.queue import get_celery
from hubtune.settings import get_settings
from testkit.stack import local_worker_env
from testkit.tiny_models import write_chat_jsonl
from tests.server.apitest_helpers import auth, make_env, upload

ESTIMATE_FIELDS = ("total_bytes", "batch_size", "seq_len", "task", "precision")


@pytest.fixture
def stack(tmp_path, monkeypatch, tiny_bert, tiny_llama):
    data, url, hub = local_worker_env(tmp_path, monkeypatch)
    hub.publish("acme/tiny-bert", folder=tiny_bert, message="tiny bert", private=False)
    hub.publish("acme/tiny-llama", folder=tiny_llama, message="tiny llama", private=False)  # public bases: any key may read them
    env = make_env(url, data)
    with env.session() as s:  # a live GPU worker, so that both answers are for a GPU (bf16)
        s.add(WorkerRecord(id="w-gpu", hostname="h", pid=1, queues=["prepare", "gpu"], last_heartbeat=time.time(),
                           resources={"cpu_count": 4, "ram_bytes": 8 << 30,
                                      "gpus": [{"name": "Test GPU", "memory_bytes": 80 << 30}]}))
        s.commit()
    yield env
    get_settings.cache_clear()
    get_celery.cache_clear()


def prepare_routed(env, key: str, body: dict) -> dict:
    from worker.prepare import run_prepare

    r = env.client.post("/v1/fine_tuning/jobs", headers=auth(key), json=body)
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    run_prepare(job_id, get_settings())
    with env.session() as s:
        job = s.get(Job, job_id)
        assert job.status == "queued", job.error
        events = s.execute(select(JobEvent).where(JobEvent.job_id == job_id)).scalars().all()
    routed = [e for e in events if e.message.startswith("Routed to queue")]
    assert routed, [e.message for e in events]
    return {"queue": job.queue, **routed[0].data["estimate"]}


def quick_start_file() -> bytes:
    return resources.files("cli").joinpath("demo_data/tickets_train.jsonl").read_bytes()


@pytest.mark.parametrize("case", ["quick-start classification", "chat on a decoder"])
def test_estimate_and_prepare_agree_for_the_same_body(stack, tmp_path, case):
    env = stack
    key = env.key()
    if case == "quick-start classification":
        # The quick start's body: 8 labels, short tickets, no task, batch size and sequence length left to
        # hubtune (prepare once routed by 4 labels, 16 x the longest ticket; the estimate said 2 x 256).
        content = quick_start_file()
        body = {"model": "acme/tiny-bert", "tuning": {"type": "lora", "r": 8}}
    else:
        # 24 chats: the auto batch is 2 at training, and every chat is shorter than max_seq_length.
        content = write_chat_jsonl(tmp_path / "chat.jsonl").read_bytes()
        body = {"model": "acme/tiny-llama", "tuning": {"type": "lora"}, "training": {"max_seq_length": 128}}
    body["training_file"] = upload(env.client, key, content)["id"]

    answer = env.client.post("/v1/fine_tuning/jobs/estimate", headers=auth(key), json=body)
    assert answer.status_code == 200, answer.text
    estimated = answer.json()
    routed = prepare_routed(env, key, body)

    assert {f: estimated[f] for f in ESTIMATE_FIELDS} == {f: routed[f] for f in ESTIMATE_FIELDS}
    assert estimated["queue"] == routed["queue"] == "gpu"
    assert estimated["parts"] == {k: routed[k] for k in estimated["parts"]}
