"""worker/notify.py: completion notifications, signed as OpenAI signs its webhooks, retried, recorded."""

from __future__ import annotations

import json

import openai

from hubtune.models import Job, Notification
from hubtune.settings import get_settings
from tests.server.apitest_helpers import auth, create_job, upload
from tests.worker.hub_world import WHSEC, Receiver, world  # noqa: F401  (world: a fixture)

def test_cancel_notifies_once_with_an_openai_verifiable_signature_after_retries(world):
    from worker.notify import run_notify

    env, _ = world
    receiver = Receiver(statuses=[503])
    key = env.key()
    job = create_job(env.client, key, upload(env.client, key)["id"], webhook_url=receiver.url)
    assert env.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(key)).json()["status"] == "cancelled"
    assert ("hubtune.notify", [job["id"]], "publish") in env.doorbells()
    run_notify(job["id"], get_settings())
    run_notify(job["id"], get_settings())  # a doorbell rung twice sends the event once
    assert len(receiver.received) == 2  # the 503, then the delivery
    (first, _), (body, headers) = receiver.received
    assert first == body
    event = openai.OpenAI(api_key="unused", webhook_secret=WHSEC).webhooks.unwrap(body.decode(), headers)
    assert event.type == "fine_tuning.job.cancelled" and event.data.id == job["id"]
    assert headers["webhook-id"] == json.loads(body)["id"]
    with env.session() as s:
        note = s.get(Notification, headers["webhook-id"])
        assert (note.status, note.attempts, note.job_id) == ("delivered", 2, job["id"])
    receiver.server.shutdown()


def test_jobs_without_webhook_url_ring_nothing_and_refused_destinations_are_recorded(world, monkeypatch):
    from worker.notify import run_notify

    env, _ = world
    key = env.key()
    quiet = create_job(env.client, key, upload(env.client, key)["id"])
    env.client.post(f"/v1/fine_tuning/jobs/{quiet['id']}/cancel", headers=auth(key))
    assert not [d for d in env.doorbells() if d[0] == "hubtune.notify"]

    job = create_job(env.client, key, upload(env.client, key)["id"], webhook_url="http://127.0.0.1:9/x")
    env.client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(key))
    monkeypatch.setenv("HUBTUNE_WEBHOOK_ALLOWED_PRIVATE", "")  # the operator withdrew the exception meanwhile
    get_settings.cache_clear()
    run_notify(job["id"], get_settings())
    with env.session() as s:
        from sqlalchemy import select

        (note,) = s.execute(select(Notification).where(Notification.job_id == job["id"])).scalars()
        assert note.status == "failed" and "private or loopback" in note.last_error
        assert s.get(Job, job["id"]).status == "cancelled"
