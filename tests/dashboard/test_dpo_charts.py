"""A DPO job's page in a real browser (Debian's Chromium via Playwright) against a real server on
PostgreSQL: the rewards of the chosen and rejected replies, their margin and the preference accuracy,
on training steps and evaluations, are drawn in the "Preference (DPO)" charts; a supervised job's page
has none of them."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from hubtune.db import engine_for
from hubtune.ids import new_id
from hubtune.models import Job, JobEvent, now
from testkit.services import postgres_database
from testkit.stack import Stack
from tests.dashboard.test_dashboard import CHROMIUM, CHROMIUM_ARGS, _browser

pytestmark = pytest.mark.e2e


def _job(db_url: str, *, dpo: bool) -> str:
    job_id = new_id("ftjob")
    method = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}} if dpo else {"type": "supervised"}
    with Session(engine_for(db_url)) as s:
        s.add(Job(id=job_id, owner="alice", status="running", model="tiny/llama", training_file="file-x", seed=3,
                  spec={"task": "causal_lm", "method": method, "tuning": {"type": "lora"}},
                  attempts=1, max_attempts=3, lease_token=1, created_at=now() - 60, updated_at=now()))
        s.flush()
        for step in range(1, 7):
            data = {"step": step, "total_steps": 10, "train_loss": 0.7 - 0.05 * step}
            if dpo:
                data.update(train_rewards_chosen=0.05 * step, train_rewards_rejected=-0.04 * step,
                            train_rewards_margin=0.09 * step, train_preference_accuracy=min(1.0, 0.2 * step))
                if step % 3 == 0:
                    data.update(valid_loss=0.6, valid_rewards_chosen=0.04 * step, valid_rewards_rejected=-0.03 * step,
                                valid_rewards_margin=0.07 * step, valid_preference_accuracy=0.25 * step / 3)
            s.add(JobEvent(job_id=job_id, type="metrics", message=f"Step {step}/10", data=data))
        s.commit()
    return job_id


def test_dpo_job_page_draws_rewards_and_preference_accuracy(tmp_path):
    sync_playwright = _browser()
    with postgres_database("hubtune_dpo_dash") as db_url:
        stack = Stack(tmp_path, {"HUBTUNE_DATABASE_URL": db_url, "HUBTUNE_BROKER_URL": ""})
        stack.spawn("server", "server", "--port", str(stack.port), "--no-migrate")
        try:
            stack.wait_healthy()
            key = stack.run("keys", "create", "--name", "alice").strip()
            dpo, sft = _job(db_url, dpo=True), _job(db_url, dpo=False)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                errors = []
                page = browser.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(stack.url + "/")
                page.fill("#api-key", key)
                page.click("#login-form button[type=submit]")
                page.wait_for_selector("#jobs-table")
                page.goto(f"{stack.url}/#/jobs/{dpo}")
                page.wait_for_selector('#rewards-chart polyline[data-series="train_rewards_margin"]', state="attached")
                rewards = {page.locator("#rewards-chart polyline").nth(i).get_attribute("data-series")
                           for i in range(page.locator("#rewards-chart polyline").count())}
                assert rewards == {f"{split}_rewards_{k}" for split in ("train", "valid")
                                   for k in ("chosen", "rejected", "margin")}
                accuracy = page.locator('#preference-chart polyline[data-series="train_preference_accuracy"]')
                assert accuracy.get_attribute("data-count") == "6"
                assert page.locator('#preference-chart polyline[data-series="valid_preference_accuracy"]'
                                    ).get_attribute("data-count") == "2"
                assert "Preference (DPO)" in page.inner_text("#charts")
                # The preference metrics are not repeated in the generic evaluation chart.
                assert page.locator('#eval-chart polyline[data-series^="valid_rewards"]').count() == 0
                page.goto(f"{stack.url}/#/jobs/{sft}")
                page.wait_for_selector('#loss-chart polyline[data-series="train_loss"]', state="attached")
                assert page.locator("#rewards-chart, #preference-chart").count() == 0
                browser.close()
            assert not errors, errors
        finally:
            stack.stop()
