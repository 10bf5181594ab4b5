"""Guard rails on small real data (Debian fortunes topics): the held-out split grows until its metric
means something and says when it still does not, mixed label spellings are named, and a model that does
not beat its baselines succeeds flagged (event, job result, model card, dashboard badge)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from bench.real_data import labelled_rows
from hubtune.models import Job, JobEvent
from hubtune.queue import get_celery
from hubtune.settings import get_settings
from testkit.real_data import real
from testkit.stack import local_worker_env
from tests.server.apitest_helpers import auth, make_env, upload
from worker.engine.data import load_examples
from worker.engine.evaluate import split_for_evaluation, split_record

TOPICS = ("computers", "science", "politics")
SEED = 0


def real_rows(per_label: int, *, seed: int = 0) -> list[dict]:
    """``per_label`` fortunes of each topic; a missing package fails under CI and skips elsewhere."""
    return real(labelled_rows, dict.fromkeys(TOPICS, per_label), seed=seed)


def write_jsonl(path, rows) -> object:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def examples_of(tmp_path, rows):
    return load_examples(write_jsonl(tmp_path / "train.jsonl", rows), task=None, param="training_file")


# --- the evaluation split ---------------------------------------------------------------------------


def test_a_60_example_3_class_set_holds_out_5_per_label_and_says_15_are_too_few(tmp_path):
    # The issue's case: round(0.1 x 20) held out 2 per label, 6 in all, and accuracy 1.0 on them "beat the
    # baseline". Now 5 per label (25 % of each label's 20); 20 in all would take a third of the file.
    examples = examples_of(tmp_path, real_rows(20))
    train_part, held, split = split_for_evaluation(examples, None, fraction=0.1, seed=3)
    counts = {label: sum(row["label"] == label for row in held.rows) for label in TOPICS}
    assert counts == dict.fromkeys(TOPICS, 5) and split["examples"] == 15 and len(train_part) == 45
    assert split["reliable"] is False
    assert split["unreliable_reason"] == ("only 15 held-out examples (5 per label); at least 20 and 5 per label "
                                          "are needed for a stable macro_f1")
    assert "max(round(fraction x n), 5)" in split["rule"]
    # prepare's record is the trainer's split (same rows, same seed), so its counts follow.
    record = split_record(examples, None, fraction=0.1, seed=3)
    assert record["lines"] == split["lines"] and record["reliable"] is False and record["rule"] == split["rule"]
    assert split_for_evaluation(examples, None, fraction=0.1, seed=4)[2]["lines"] != split["lines"]


def test_a_120_example_set_is_topped_up_to_20_and_is_reliable(tmp_path):
    examples = examples_of(tmp_path, real_rows(40))
    _, held, split = split_for_evaluation(examples, None, fraction=0.1, seed=3)
    counts = sorted(sum(row["label"] == label for row in held.rows) for label in TOPICS)
    assert split["examples"] == 20 and counts == [6, 7, 7]  # 4 asked per label -> 5, then spread to 20
    assert split["reliable"] is True and split["unreliable_reason"] is None
    # A user's own larger fraction is kept: 40 % of 40 is past the 25 % growth cap, and asked for.
    assert split_for_evaluation(examples, None, fraction=0.4, seed=3)[2]["examples"] == 48


def test_a_30_example_set_stays_small_and_unreliable_and_a_small_validation_file_too(tmp_path):
    examples = examples_of(tmp_path, real_rows(10))
    _, held, split = split_for_evaluation(examples, None, fraction=0.1, seed=3)
    assert split["examples"] == 6  # 25 % of 10 per label: the split does not eat the training data
    assert split["reliable"] is False and split["unreliable_reason"].startswith("only 6 held-out examples (2 per label)")
    valid = load_examples(write_jsonl(tmp_path / "valid.jsonl", real_rows(3, seed=9)), task=None,
                          param="validation_file")
    _, _, from_file = split_for_evaluation(examples, valid, fraction=0.1, seed=3)
    assert from_file["source"] == "validation_file" and from_file["reliable"] is False
    assert from_file["unreliable_reason"].startswith("only 9 validation-file examples (3 per label)")


def test_a_causal_lm_split_grows_to_20_when_that_is_a_quarter_of_the_file_at_most(tmp_path):
    rows = [{"prompt": f"Topic of: {r['text']}", "completion": r["label"]} for r in real_rows(30)]
    examples = examples_of(tmp_path, rows)
    _, held, split = split_for_evaluation(examples, None, fraction=0.1, seed=3)
    assert split["examples"] == 20 and split["reliable"] is True  # round(0.1 x 90) = 9 -> 20 (22 % of 90)
    small = examples_of(tmp_path, rows[:60])
    _, _, split = split_for_evaluation(small, None, fraction=0.1, seed=3)
    assert split["examples"] == 6 and split["reliable"] is False  # 20 would be a third of 60
    assert split["unreliable_reason"] == ("only 6 held-out examples; at least 20 are needed for a stable "
                                          "valid_loss")


# --- label spellings ----------------------------------------------------------------------------------


def test_labels_that_mix_numbers_and_strings_are_named_with_both_spellings(tmp_path, bert_tokenizer):
    from worker.engine.data_report import data_report

    rows = real_rows(8)
    spelled = [{"text": r["text"], "label": {"computers": 0, "science": 1, "politics": "1"}[r["label"]]} for r in rows]
    examples = examples_of(tmp_path, spelled)
    assert examples.labels == ["0", "1"]  # str(1) == "1": one label
    first = {kind: 1 + next(i for i, r in enumerate(spelled) if r["label"] == value)
             for kind, value in (("number", 1), ("string", "1"))}
    warning = ('labels mix JSON numbers and strings: 1 (number, 8 rows, first line '
               f'{first["number"]}) and "1" (string, 8 rows, first line {first["string"]}) are treated as the '
               'same label "1"')
    report = data_report(examples, tokenizer=bert_tokenizer, max_seq_length=64)
    assert warning in report["warnings"]
    # 0/1 next to words: different labels, both spellings named.
    words = [{"text": r["text"], "label": {"computers": 0, "science": 1, "politics": "spam"}[r["label"]]}
             for r in rows]
    note = examples_of(tmp_path, words).notes
    assert len(note) == 1 and '"spam" (string, 8 rows' in note[0] and "0 (number, 8 rows" in note[0]
    assert note[0].endswith("every label is read as text, so they are 3 different labels")
    # One spelling only: nothing to say.
    assert examples_of(tmp_path, rows).notes == []
    assert examples_of(tmp_path, [{**r, "label": i % 2} for i, r in enumerate(rows)]).notes == []


# --- through the worker: prepare, train, publish ------------------------------------------------------


@pytest.fixture
def stack(tmp_path, monkeypatch, minilm):
    """A migrated SQLite database, process settings pointing at it, and a local hub holding the real
    all-MiniLM-L6-v2 (public) as acme/minilm; the worker's own functions run in this process."""
    data, url, hub = local_worker_env(tmp_path, monkeypatch)
    hub.publish("acme/minilm", folder=minilm, message="all-MiniLM-L6-v2", private=False)
    yield make_env(url, data), hub
    get_settings.cache_clear()
    get_celery.cache_clear()


def create_and_prepare(env, key: str, rows: list[dict], **body) -> str:
    from worker.prepare import run_prepare

    file_id = upload(env.client, key, "".join(json.dumps(r) + "\n" for r in rows).encode())["id"]
    r = env.client.post("/v1/fine_tuning/jobs", headers=auth(key),
                        json={"model": "acme/minilm", "training_file": file_id, **body})
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    run_prepare(job_id, get_settings())
    return job_id


def events_of(env, job_id: str) -> list[JobEvent]:
    with env.session() as s:
        return s.execute(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).scalars().all()


def test_prepare_warns_that_a_30_example_split_is_unreliable_and_names_mixed_spellings(stack):
    env, _ = stack
    key = env.key()
    rows = [{**r, "label": {"computers": 0, "science": "1", "politics": 1}[r["label"]]} for r in real_rows(10)]
    job_id = create_and_prepare(env, key, rows)
    job = env.client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth(key)).json()
    assert job["status"] == "queued", job["error"]
    split = job["data_report"]["evaluation_split"]
    # 1 and "1" are one label "1" of 20 rows (5 held out), label "0" has 10 (25 %: 2 held out).
    assert split["examples"] == 7 and split["reliable"] is False
    reason = ("only 7 held-out examples (2 of label '0', the fewest); at least 20 and 5 per label are needed for "
              "a stable macro_f1")
    assert split["unreliable_reason"] == reason
    assert f"the evaluation is unreliable: {reason}" in job["data_report"]["warnings"]
    report = [e for e in events_of(env, job_id) if e.message.startswith("Data report")]
    assert len(report) == 1 and report[0].level == "warn"
    assert reason in report[0].message and '"1" (string, 10 rows' in report[0].message
    assert "1 (number, 10 rows" in report[0].message
    # What prepare's "auto" counts is what the trainer will train on: the file less the grown split.
    assert job["data_report"]["examples"] == 30


def train_and_publish(env, job_id: str) -> dict:
    from worker.publish import run_publish
    from worker.train import run_train

    run_train(job_id, get_settings())
    run_publish(job_id, get_settings())
    with env.session() as s:
        job = s.get(Job, job_id)
        return {"status": job.status, "error": job.error, "result": job.result,
                "model": job.fine_tuned_model}


@pytest.mark.e2e  # two real MiniLM trainings: 3.5 min on this shared 2-core machine
def test_a_model_below_its_baselines_succeeds_flagged_and_one_that_learns_says_what_it_beat(stack):
    env, hub = stack
    key = env.key()
    rows = real_rows(40)  # 120 examples: 20 held out, reliable
    # A learning rate of 1e-9 leaves the model where it started (tuned == base): it cannot beat the base.
    stuck = create_and_prepare(env, key, rows, hyperparameters={"n_epochs": 1, "batch_size": 32},
                               training={"max_seq_length": 48, "learning_rate": 1e-9}, seed=SEED)
    # Every hyperparameter "auto" (calibrated defaults, the learning-rate search). It learns, but whether it
    # beats the linear probe on 20 held-out examples depends on the split (the job's seed): tuned vs probe
    # macro-F1 0.845 vs 0.731, 0.842 vs 0.897 and (seed 0) 0.665 vs 0.839 in three runs. So the test holds
    # it to learning, and to a flag that says exactly what its own evaluation says.
    learns = create_and_prepare(env, key, rows, hyperparameters={}, training={"max_seq_length": 48}, seed=SEED)
    outcome = {job_id: train_and_publish(env, job_id) for job_id in (stuck, learns)}
    print({j: o["result"]["evaluation"] for j, o in outcome.items()})

    flagged = outcome[stuck]
    assert flagged["status"] == "succeeded", flagged["error"]
    assert flagged["result"]["evaluation"]["beat_baseline"] is False
    [warning] = flagged["result"]["warnings"]
    assert warning["code"] == "below_baseline"
    assert warning["message"].startswith("The fine-tuned model does not beat its baselines on the held-out split: "
                                         "macro_f1 ")
    # The owner reads the flag through the API, and a warn event says it.
    job = env.client.get(f"/v1/fine_tuning/jobs/{stuck}", headers=auth(key)).json()
    assert job["result"]["warnings"] == [warning]
    warned = [e for e in events_of(env, stuck) if e.level == "warn" and e.message == warning["message"]]
    assert len(warned) == 1
    card = (hub.snapshot(*flagged["model"].split("@")[:1], revision=flagged["model"].split("@")[1]) / "README.md").read_text()
    body_lines = card.split("\n---\n", 1)[1].lstrip("\n").splitlines()
    assert body_lines[0].startswith("# ") and body_lines[2].startswith(
        "> **Warning:** the fine-tuned model does not beat its baselines on `macro_f1`")

    clean = outcome[learns]
    assert clean["status"] == "succeeded", clean["error"]
    evaluation = clean["result"]["evaluation"]
    assert evaluation["tuned"]["macro_f1"] >= evaluation["majority_baseline"]["macro_f1"] + 0.3
    assert evaluation["tuned"]["macro_f1"] > flagged["result"]["evaluation"]["tuned"]["macro_f1"] + 0.2
    beat = all(evaluation["tuned"]["macro_f1"] > baseline["macro_f1"]
               for baseline in (evaluation["base"], evaluation["majority_baseline"]))
    assert evaluation["beat_baseline"] is beat
    card = (hub.snapshot(clean["model"].split("@")[0], revision=clean["model"].split("@")[1]) / "README.md").read_text()
    flag_events = [e for e in events_of(env, learns) if "does not beat" in e.message]
    if beat:
        assert clean["result"]["warnings"] == [] and not flag_events and "**Warning:**" not in card
    else:
        assert [w["code"] for w in clean["result"]["warnings"]] == ["below_baseline"]
        assert len(flag_events) == 1 and "**Warning:**" in card


# --- the verdict's words, without training ----------------------------------------------------------


def evaluation_record_for(*, tuned_f1: float, examples: int = 20, reliable: bool = True) -> dict:
    split = {"source": "held_out", "examples": examples, "fraction": 0.1, "reliable": reliable,
             "unreliable_reason": None if reliable else f"only {examples} held-out examples (2 per label); at "
                                                         "least 20 and 5 per label are needed for a stable macro_f1"}
    return {"split": split, "primary_metric": "macro_f1", "base": {"macro_f1": 0.46}, "tuned": {"macro_f1": tuned_f1},
            "majority_baseline": {"macro_f1": 0.46}, "beat_baseline": tuned_f1 > 0.46, "goal": None}


def test_the_flag_and_the_cards_first_lines_follow_the_evaluation():
    from plugin.modelcard import render_model_card
    from worker.engine.verdict import quality_warnings

    def card_head(evaluation) -> list[str]:
        card = render_model_card(repo_id="acme/out", base_model="acme/minilm", base_model_revision=None,
                                 task="sequence_classification", tuning={"type": "lora"}, hyperparameters={},
                                 datasets=[], metrics={}, evaluation=evaluation)
        return [line for line in card.split("\n---\n", 1)[1].splitlines() if line][:3]

    below = evaluation_record_for(tuned_f1=0.46)
    [flag] = quality_warnings(below)
    assert flag == {"code": "below_baseline", "message": (
        "The fine-tuned model does not beat its baselines on the held-out split: macro_f1 0.46 vs 0.46 for the "
        "majority class and 0.46 for the base model; try more epochs or a higher learning rate, or check that "
        "the labels fit the text.")}
    assert card_head(below)[1].startswith("> **Warning:** the fine-tuned model does not beat its baselines")
    good = evaluation_record_for(tuned_f1=0.9)
    assert quality_warnings(good) == [] and not card_head(good)[1].startswith(">")
    # A tiny split: the verdict says what it rests on, and the card says the evaluation is unreliable.
    tiny = evaluation_record_for(tuned_f1=1.0, examples=6, reliable=False)
    assert [w["code"] for w in quality_warnings(tiny)] == ["unreliable_evaluation"]
    assert card_head(tiny)[1].startswith("> **Warning:** the evaluation is unreliable: only 6 held-out examples")
    tiny_below = evaluation_record_for(tuned_f1=0.3, examples=6, reliable=False)
    assert quality_warnings(tiny_below)[0]["message"].endswith("(this rests on only 6 examples).")
    assert "(measured on only 6 examples)" in card_head(tiny_below)[1]
