"""The dashboard in a real browser (Debian's Chromium driven by Playwright, never a downloaded browser)
against a real server and Celery worker on PostgreSQL + Redis: log in with a key, watch a running job's
progress bar move without reloading, read its loss chart, cancel it, see the worker on the queues page,
and never see another owner's job. Screenshots of every page go to test-artifacts/dashboard/."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.fixtures.tiny_models import make_tiny_bert, write_classification_jsonl
from tests.support import services
from tests.support.services import postgres_database, redis_url
from tests.support.stack import Stack, all_events, upload, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"

pytestmark = pytest.mark.e2e


def _browser():
    """Playwright's sync API with Debian's Chromium; a missing browser fails the test."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        problem = f"playwright is not installed: {exc}"
    if problem is None and not os.access(CHROMIUM, os.X_OK):
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    if problem:
        services.missing("Chromium", RuntimeError(problem))
    return sync_playwright


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    sync_playwright = _browser()
    root = tmp_path_factory.mktemp("dashboard")
    with postgres_database("hubtune_dash") as db_url:
        stack = Stack(root, {"HUBTUNE_DATABASE_URL": db_url, "HUBTUNE_BROKER_URL": redis_url(11),
                             "HUBTUNE_HEARTBEAT_SECONDS": "1"})
        stack.run("hub", "import", str(make_tiny_bert(root / "tiny-bert")), "tiny/bert")
        stack.start(worker_queues="prepare,train,publish")
        keys = {name: stack.run("keys", "create", "--name", name, *(["--admin"] if name == "ops" else [])).strip()
                for name in ("alice", "bob", "ops")}
        SHOTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                yield {"stack": stack, "keys": keys, "root": root, "browser": browser, "console_errors": [],
                       "db_url": db_url}
            finally:
                browser.close()
                stack.stop()


def _login(env, who: str):
    context = env["browser"].new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    # Anything the page's own content policy blocks (or any script error) fails the test at the end.
    page.on("console", lambda msg: msg.type == "error" and env["console_errors"].append(msg.text))
    page.on("pageerror", lambda exc: env["console_errors"].append(str(exc)))
    page.goto(env["stack"].url + "/")
    page.fill("#api-key", env["keys"][who])
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#jobs-table")
    return context, page


def _until(check, *, timeout: float = 60, what: str = "condition"):
    """Poll `check` from Python: the page's strict CSP (no eval) rules out page.wait_for_function."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _percent(page, job_id: str) -> float:
    return float(page.get_attribute(f'tr[data-job-id="{job_id}"] .progress', "data-percent"))


def _failed_publish_job(env) -> str:
    """A job of Alice's as worker/publish.py leaves it when the hub refused the push: trained, evaluated,
    failed with a hub error (written straight to the database: no hub is needed to look at it)."""
    from hubtune.db import engine_for
    from hubtune.ids import new_id
    from hubtune.models import Job, JobEvent, now
    from sqlalchemy.orm import Session

    job_id = new_id("ftjob")
    evaluation = {"split": {"source": "validation_file", "examples": 16, "fraction": None},
                  "primary_metric": "macro_f1", "base": {"accuracy": 0.5, "macro_f1": 0.33, "valid_loss": 0.71},
                  "tuned": {"accuracy": 0.94, "macro_f1": 0.94, "valid_loss": 0.21},
                  "majority_baseline": {"accuracy": 0.5, "macro_f1": 0.33}, "beat_baseline": True, "goal": None}
    with Session(engine_for(env["db_url"])) as s:
        s.add(Job(id=job_id, owner="alice", status="failed", model="tiny/bert", training_file="file-x", seed=3,
                  spec={"task": "sequence_classification", "tuning": {"type": "lora", "r": 8}},
                  result={"evaluation": evaluation, "metrics": {"valid_loss": 0.21}},
                  error={"code": "hub_auth_error", "param": "hub",
                         "message": "Publishing to the hub failed: 401 Unauthorized."},
                  attempts=1, max_attempts=3, lease_token=1, created_at=now() - 600, updated_at=now(),
                  started_at=now() - 590, finished_at=now() - 5))
        s.flush()
        for step in (1, 2, 3, 4):
            s.add(JobEvent(job_id=job_id, type="metrics", message=f"Step {step}/4",
                           data={"step": step, "total_steps": 4, "train_loss": 1.0 / step}))
        s.commit()
    return job_id


def _failed_publish_detail(env) -> None:
    job_id = _failed_publish_job(env)
    context, page = _login(env, "alice")
    try:
        page.goto(f"{env['stack'].url}/#/jobs/{job_id}")
        page.wait_for_selector("#evaluation-table")
        table = page.inner_text("#evaluation-table")
        assert "macro_f1 (primary)" in table and "0.9400" in table and "0.3300" in table
        assert "hub_auth_error" in page.inner_text("#job-error")
        # Retry publish is offered; with no artifact kept the server says why, and the page shows it.
        page.click('#actions button[data-action="publish"]')
        _until(lambda: page.inner_text("#action-note").strip(), what="the retry-publish answer")
        page.screenshot(path=str(SHOTS / "job-failed-publish.png"), full_page=True)
    finally:
        context.close()


def _train_steps(client, job_id: str) -> list[int]:
    return [e["data"]["step"] for e in all_events(client, job_id)
            if e["type"] == "metrics" and "train_loss" in (e["data"] or {})]


def test_dashboard_watch_cancel_queues_and_owner_scoping(env):
    stack, root = env["stack"], env["root"]
    alice, bob = stack.client(env["keys"]["alice"]), stack.client(env["keys"]["bob"])

    # Bob's job: another owner's, cancelled at once so the single worker is free for Alice's.
    bob_file = upload(bob, write_classification_jsonl(root / "bob.jsonl", n=16, seed=5))
    bob_job = bob.post("/fine_tuning/jobs", json={"model": "tiny/bert", "training_file": bob_file,
                                                  "task": "sequence_classification"}).json()
    assert bob.post(f"/fine_tuning/jobs/{bob_job['id']}/cancel").json()["status"] == "cancelled"

    # Alice's: long enough to be running while we look (we cancel it), evaluating every few steps.
    train = upload(alice, write_classification_jsonl(root / "train.jsonl", n=64, seed=1))
    valid = upload(alice, write_classification_jsonl(root / "valid.jsonl", n=16, seed=2))
    created = alice.post("/fine_tuning/jobs", json={
        "model": "tiny/bert", "training_file": train, "validation_file": valid, "task": "sequence_classification",
        "training": {"max_steps": 4000, "max_seq_length": 32, "eval_steps": 4, "save_steps": 1000},
        "hyperparameters": {"batch_size": 4}})
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    deadline = time.monotonic() + 300
    while len(_train_steps(alice, job_id)) < 2:
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.3)

    context, page = _login(env, "alice")
    try:
        # The jobs table: Alice's running job, its progress bar moving without a reload; never Bob's job.
        row = f'tr[data-job-id="{job_id}"]'
        page.wait_for_selector(f'{row} .badge[data-status="running"]')
        first = _until(lambda: _percent(page, job_id), what="a first progress figure")
        navigations = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        _until(lambda: _percent(page, job_id) > first, what="the progress bar to advance")
        assert _percent(page, job_id) > first and navigations == []  # it moved, and the page never reloaded
        assert page.locator(f'tr[data-job-id="{bob_job["id"]}"]').count() == 0
        assert page.locator("#jobs-table tbody tr").count() == 1
        assert "ETA" in page.inner_text(f"{row} .progress .eta")
        page.screenshot(path=str(SHOTS / "jobs.png"), full_page=True)

        # Filters: a status that does not match hides the row; another owner's filter is refused.
        page.select_option("#filter-status", "succeeded")
        page.click("#job-filters button[type=submit]")
        page.wait_for_selector("#jobs-table .notice")
        page.goto(stack.url + "/#/jobs")

        # The detail page: a loss curve drawn from at least three points, the event log and the config.
        page.click(f'{row} a')
        loss = page.locator('#loss-chart polyline[data-series="train_loss"]')
        _until(lambda: loss.count() and int(loss.get_attribute("data-count")) >= 3, what="three loss points")
        points = loss.get_attribute("points").split()
        assert len(points) >= 3 and len(set(points)) >= 3
        assert "Step" in page.inner_text("#event-log")
        assert "tiny/bert" in page.inner_text("#config")
        page.wait_for_selector('#loss-chart polyline[data-series="eval loss"]', timeout=60_000)
        page.screenshot(path=str(SHOTS / "job-running.png"), full_page=True)

        # After a reload everything is there again (it comes from the database).
        page.reload()
        page.wait_for_selector('#loss-chart polyline[data-series="train_loss"]')

        # Cancel from the page.
        page.click('#actions button[data-action="cancel"]')
        page.wait_for_selector('.head .badge[data-status="cancelled"]', timeout=30_000)
        assert page.locator('#actions button[data-action="cancel"]').count() == 0
        assert wait_for(alice, job_id, timeout=60)["status"] == "cancelled"
        page.screenshot(path=str(SHOTS / "job-cancelled.png"), full_page=True)

        # Bob's job by its address: not found for Alice.
        page.goto(f"{stack.url}/#/jobs/{bob_job['id']}")
        page.wait_for_selector("text=Job not found")

        # A user's queues page: lengths and a worker count, no worker details.
        page.goto(stack.url + "/#/queues")
        page.wait_for_selector('#queues-table tr[data-queue="train"]')
        page.wait_for_selector("text=worker(s) online")
        assert page.locator("#workers-table").count() == 0
        page.screenshot(path=str(SHOTS / "queues-user.png"), full_page=True)
    finally:
        context.close()

    _failed_publish_detail(env)

    # The admin sees the worker: host, CPU/RAM (or GPUs), queues, heartbeat; and everyone's jobs.
    context, page = _login(env, "ops")
    try:
        page.wait_for_selector(f'tr[data-job-id="{bob_job["id"]}"]')
        page.screenshot(path=str(SHOTS / "jobs-admin.png"), full_page=True)
        page.click('a[data-nav="queues"]')
        worker = page.wait_for_selector("#workers-table tbody tr[data-worker-id]")
        text = worker.inner_text()
        assert "prepare, publish, train" in text and ("CPU" in text or "GPU" in text) and "ago" in text
        page.wait_for_selector("#finished-chart rect")  # the two cancelled jobs this hour
        page.screenshot(path=str(SHOTS / "queues-admin.png"), full_page=True)

        # Logging out ends the session: the API refuses the cookie's absence and the login form returns.
        page.click("#logout")
        page.wait_for_selector("#login-form")
        page.reload()
        page.wait_for_selector("#login-form")
    finally:
        context.close()
    # HTTP error answers are expected (logged-out probes, Bob's job, the refused publish); no script error is.
    assert [e for e in env["console_errors"] if not e.startswith("Failed to load resource")] == []
