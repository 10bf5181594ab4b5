"""A job's events leave out the steps a long run thins away; its metrics series has every step."""

from __future__ import annotations

from hubtune.models import JobEvent, now
from tests.server.apitest_helpers import assert_error, auth, create_job, upload


def test_events_show_the_shown_steps_and_the_series_has_them_all(env):
    key = env.key()
    jid = create_job(env.client, key, upload(env.client, key)["id"])["id"]
    with env.session() as s:
        for step in range(1, 8):
            kind = "metrics" if step in (1, 4, 7) else "series"
            s.add(JobEvent(job_id=jid, message=f"Step {step}/7: training loss=1", type=kind, level="info",
                           data={"step": step, "train_loss": 1.0 / step}, created_at=now()))
        s.commit()
    events = env.client.get(f"/v1/fine_tuning/jobs/{jid}/events", headers=auth(key), params={"limit": 100}).json()
    assert [e["data"]["step"] for e in events["data"] if e["type"] == "metrics"] == [7, 4, 1]
    assert {e["type"] for e in events["data"]} == {"metrics", "message"}

    url = f"/v1/fine_tuning/jobs/{jid}/metrics"
    body = env.client.get(url, headers=auth(key)).json()
    assert body["object"] == "list" and body["has_more"] is False
    assert [p["step"] for p in body["data"]] == list(range(1, 8))
    assert body["data"][1]["data"] == {"step": 2, "train_loss": 0.5}
    assert body["data"][0]["object"] == "fine_tuning.job.metrics" and body["data"][0]["id"].startswith("ftevent-")
    page = env.client.get(url, headers=auth(key), params={"limit": 3}).json()
    assert [p["step"] for p in page["data"]] == [1, 2, 3] and page["has_more"] is True
    page = env.client.get(url, headers=auth(key), params={"after": page["data"][-1]["id"]}).json()
    assert [p["step"] for p in page["data"]] == [4, 5, 6, 7] and page["has_more"] is False
    assert_error(env.client.get(url, headers=auth(key), params={"after": "ftevent-x"}), 400, param="after")
    assert env.client.get(url, headers=auth(env.key("someone-else"))).status_code == 404
