"""The dashboard in a real browser (Debian's Chromium driven by Playwright, never a downloaded browser)
against a real server and Celery worker on PostgreSQL + Redis: log in with a key, watch a running job's
progress bar move without reloading, read its loss chart, cancel it, see the worker on the queues page,
and never see another owner's job. Screenshots of every page go to test-artifacts/dashboard/."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest

from testkit.tiny_models import make_tiny_bert, write_classification_jsonl
from testkit import services
from testkit.services import postgres_database, redis_url
from testkit.stack import Stack, all_events, upload, wait_for

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
                  "majority_baseline": {"accuracy": 0.5, "macro_f1": 0.33}, "beat_baseline": True, "goal": None,
                  # A record without base_kind (written before it existed) and causal-style samples with markup.
                  "samples": [{"prompt": "colour red means", "reference": " red red",
                               "base": "<b>bold</b><script>window.pwned = 1</script>", "tuned": " red red"}]}
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
        # A warning as hubtune writes it, and one from a row written before the levels were unified.
        s.add(JobEvent(job_id=job_id, level="warn", message="Publishing failed (502); retrying in 1 s"))
        s.add(JobEvent(job_id=job_id, level="warning", message="Publisher p-1 lost; publishing again"))
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
        assert "base model" in table.lower() and "linear probe" not in table.lower()  # headers are upper-cased
        samples = page.inner_text("#samples-table")  # shown as text, never as markup
        assert "colour red means" in samples and "<b>bold</b><script>window.pwned = 1</script>" in samples
        assert page.locator("#samples-table b, #samples-table script").count() == 0
        assert page.evaluate("window.pwned") is None
        assert "hub_auth_error" in page.inner_text("#job-error")
        # Warnings stand out in the event log, whichever spelling the row has (the API answers "warn").
        warned = page.locator("#event-log .lvl-warn")
        _until(lambda: warned.count() == 2, what="both warnings in the log")
        colours = {warned.nth(i).evaluate("e => getComputedStyle(e).color") for i in range(2)}
        assert colours == {"rgb(201, 138, 18)"}  # --warn in style.css
        # Retry publish is offered; with no artifact kept the server says why, and the page shows it.
        page.click('#actions button[data-action="publish"]')
        _until(lambda: page.inner_text("#action-note").strip(), what="the retry-publish answer")
        page.screenshot(path=str(SHOTS / "job-failed-publish.png"), full_page=True)
    finally:
        context.close()


def _finished_job(env) -> str:
    """A succeeded job of Alice's as the workers leave it (written straight to the database): a result
    with nested metrics and timings, an evaluation, a published adapter, and one logged step."""
    from hubtune.db import engine_for
    from hubtune.ids import new_id
    from hubtune.models import Job, JobEvent, now
    from sqlalchemy.orm import Session

    job_id = new_id("ftjob")
    evaluation = {"split": {"source": "validation_file", "examples": 40, "fraction": None},
                  "primary_metric": "macro_f1",
                  "base": {"accuracy": 0.225, "macro_f1": 0.1837, "valid_loss": 1.3912,
                           "recall_per_class": {"account": 0.1, "billing": 0.4, "bug": 0.2, "shipping": 0.2}},
                  "tuned": {"accuracy": 0.975, "macro_f1": 0.9749, "valid_loss": 0.1523,
                            "recall_per_class": {"account": 1.0, "billing": 0.9, "bug": 1.0, "shipping": 1.0}},
                  "majority_baseline": {"accuracy": 0.25, "macro_f1": 0.1,
                                        "recall_per_class": {"account": 1.0, "billing": 0.0, "bug": 0.0,
                                                             "shipping": 0.0}},
                  "base_kind": "linear_probe", "beat_baseline": True, "goal": None, "samples": []}
    metrics = {"train_loss": 0.2034, "train_loss_mean": 0.6611, "valid_loss": 0.1523, "valid_accuracy": 0.975,
               "train_runtime_s": 41.217, "train_phase_s": 30.1,
               "timings_s": {"load_s": 3.2, "tokenize_s": 0.4, "baseline_eval_s": 1.1, "train_s": 33.0,
                             "final_eval_s": 1.0, "save_s": 0.3}}
    result = {"metrics": metrics, "steps": 30, "evaluation": evaluation, "trainable_params": 74_244,
              "total_params": 22_787_076, "world_size": 1, "fed_positions": 30_720,
              "reference": {"inputs": ["my card was charged twice", "the app crashes"],
                            "labels": ["billing", "bug"]}}
    spec = {"task": "sequence_classification", "tuning": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.05},
            "training": {"learning_rate": 0.001, "max_seq_length": 64, "lr_scheduler": "linear"},
            "hub": {"repo_id": "alice/all-MiniLM-L6-v2-tickets", "private": True},
            "hyperparameters": {"n_epochs": 3, "batch_size": 16}}
    with Session(engine_for(env["db_url"])) as s:
        s.add(Job(id=job_id, owner="alice", status="succeeded", model="sentence-transformers/all-MiniLM-L6-v2",
                  training_file="file-train", validation_file="file-valid", seed=42, spec=spec, result=result,
                  data_report={"train": {"examples": 160, "labels": {"billing": 40, "bug": 40, "account": 40,
                                                                       "shipping": 40}}, "tokens": 5120},
                  fine_tuned_model="alice/all-MiniLM-L6-v2-tickets@0123456789abcdef0123456789abcdef01234567",
                  attempts=1, max_attempts=3, lease_token=1, created_at=now() - 120, updated_at=now(),
                  started_at=now() - 110, finished_at=now() - 5, trained_tokens=15_360,
                  lineage={"parent": {"type": "checkpoint", "job_id": "ftjob-parent1", "checkpoint_id": "ftckpt-7",
                                      "step": 20, "ref": "/kept/checkpoint-20"},
                           "kind": "adapter", "base_model": "sentence-transformers/all-MiniLM-L6-v2",
                           "base_revision": "a" * 40, "ancestors": []}))
        s.flush()
        s.add(JobEvent(job_id=job_id, type="metrics", message="Step 30/30: training loss=0.2034",
                       data={"step": 30, "total_steps": 30, "train_loss": 0.2034}))
        s.commit()
    return job_id


def _box_overlap(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


def _finished_job_page(env) -> None:
    """The finished-job page at 1,400 px reads well: tables, not raw JSON; nothing spills over a neighbour;
    a one-point chart with finite, distinct axis labels around a visible point."""
    job_id = _finished_job(env)
    context = env["browser"].new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.on("pageerror", lambda exc: env["console_errors"].append(str(exc)))
    try:
        page.goto(env["stack"].url + "/")
        page.fill("#api-key", env["keys"]["alice"])
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#jobs-table")
        page.goto(f"{env['stack'].url}/#/jobs/{job_id}")
        page.wait_for_selector("#evaluation-table")
        page.wait_for_selector('#loss-chart [data-series="train_loss"]', state="attached")
        page.screenshot(path=str(SHOTS / "job-succeeded-1400.png"), full_page=True)

        # The evaluation table stays inside its card, clear of the Hub card.
        table, hub = page.locator("#evaluation-table").bounding_box(), page.locator("#hub").bounding_box()
        card = page.locator("#evaluation").bounding_box()
        assert not _box_overlap(table, hub), (table, hub)
        assert table["x"] + table["width"] <= card["x"] + card["width"] + 0.5, (table, card)

        # Result and Configuration are tables (nested keys flattened), with no JSON dumped in them.
        for card_id, keys in (("#result", ["train_loss", "timings_s.load_s", "trainable_params", "steps"]),
                              ("#config", ["model", "lora", "learning_rate", "repo_id", "n_epochs"])):
            assert page.locator(f"{card_id} table").count() >= 1, card_id
            assert page.locator(f"{card_id} pre").count() == 0, card_id
            text = "\n".join(page.locator(f"{card_id} table").all_inner_texts())
            for key in keys:
                assert key in text, (card_id, key, text)
            assert "{" not in text and '":' not in text, (card_id, text)
        assert "0.2034" in page.inner_text("#result")
        # A continued job names what it continued (hubtune/lineage.py).
        assert "ftckpt-7 (step 20 of ftjob-parent1), its adapter on sentence-transformers/all-MiniLM-L6-v2" in \
            page.inner_text("#config")
        evaluation = page.inner_text("#evaluation-table")
        assert "billing" in evaluation and "{" not in evaluation, evaluation
        assert "linear probe (base model embeddings)" in evaluation.lower(), evaluation
        assert "logistic regression" in page.inner_text("#evaluation") and page.locator("#samples-table").count() == 0

        # One logged step: the axes are finite numbers around the point, which sits inside the plot.
        labels = [t for t in page.locator("#loss-chart text").all_text_contents() if t not in ("step",)]
        numbers = [float(t) for t in labels]  # a NaN or an empty label fails here
        assert all(math.isfinite(v) for v in numbers) and len(set(labels)) == len(labels), labels
        ys = [float(t) for t in page.locator("#loss-chart text.y-label").all_text_contents()]
        assert len(ys) >= 3 and min(ys) < 0.2034 < max(ys) and min(ys) >= 0, ys
        xs = [float(t) for t in page.locator("#loss-chart text.x-label").all_text_contents()]
        assert 30 in xs and all(x >= 0 for x in xs), xs
        point = page.locator('#loss-chart circle[data-series="train_loss"]')
        assert point.count() == 1
        plot = page.locator("#loss-chart").bounding_box()
        dot = point.bounding_box()
        assert dot["width"] >= 5, dot  # visible
        assert plot["x"] + 0.2 * plot["width"] < dot["x"] < plot["x"] + 0.8 * plot["width"], (dot, plot)
        # A finished job shows no running stage.
        assert page.inner_text("#job-stage").strip() == ""
    finally:
        context.close()


def _below_baseline_badges(env) -> None:
    """A succeeded job whose result carries warnings (worker/engine/verdict.py) shows a badge in its job
    row and on its page, with a Warnings card; a job without warnings shows none."""
    from hubtune.db import engine_for
    from hubtune.ids import new_id
    from hubtune.models import Job, now
    from sqlalchemy.orm import Session

    message = ("The fine-tuned model does not beat its baselines on the held-out split: macro_f1 0.22 vs "
               "0.15 for the majority class and 0.22 for the base model; try more epochs or a higher learning rate.")
    ids = {}
    with Session(engine_for(env["db_url"])) as s:
        for name, warnings in (("flagged", [{"code": "below_baseline", "message": message}]), ("clean", [])):
            ids[name] = new_id("ftjob")
            s.add(Job(id=ids[name], owner="alice", status="succeeded", model="tiny/bert", training_file="file-x",
                      seed=3, spec={"task": "sequence_classification", "tuning": {"type": "lora"}},
                      result={"metrics": {"valid_loss": 1.09}, "warnings": warnings}, attempts=1, max_attempts=3,
                      lease_token=1, created_at=now(), updated_at=now(), finished_at=now()))
        s.commit()
    context, page = _login(env, "alice")
    try:
        for name, expected in (("flagged", 1), ("clean", 0)):
            page.wait_for_selector(f'tr[data-job-id="{ids[name]}"]')
            row = page.locator(f'tr[data-job-id="{ids[name]}"] [data-warning="below_baseline"]')
            assert row.count() == expected, name
        badge = page.locator(f'tr[data-job-id="{ids["flagged"]}"] [data-warning="below_baseline"]')
        assert badge.inner_text().strip().endswith("below baseline") and badge.get_attribute("title") == message
        page.goto(f"{env['stack'].url}/#/jobs/{ids['flagged']}")
        page.wait_for_selector("#quality-warnings")
        assert page.locator('.head [data-warning="below_baseline"]').count() == 1
        assert message in page.inner_text("#quality-warnings")
        page.screenshot(path=str(SHOTS / "job-below-baseline.png"), full_page=True)
        page.goto(f"{env['stack'].url}/#/jobs/{ids['clean']}")
        page.wait_for_selector("#result")
        assert page.locator("#quality-warnings").count() == 0 and page.locator(".head [data-warning]").count() == 0
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
        # A cancelled job keeps no running stage, in the API or on the page.
        assert alice.get(f"/fine_tuning/jobs/{job_id}").json()["stage"] is None
        _until(lambda: "training" not in page.inner_text(".head"), what="the stage to go")
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
    _finished_job_page(env)
    _below_baseline_badges(env)

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
