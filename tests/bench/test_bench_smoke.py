"""The bench scripts' core functions in a tiny configuration, so that they keep working (not a benchmark)."""

from __future__ import annotations

import asyncio

import pytest

from bench import api_load, dispatch_latency, gpu_throughput, training_overhead
from bench.plain_peft import plain_train, steady_rate
from bench.stacks import embedded, percentile
from bench.workloads import causal_rows, make_llama, param_count, read_jsonl, write_jsonl
from testkit.tiny_models import make_tiny_bert, write_classification_jsonl


def test_plain_script_and_hubtune_engine_train_the_same_tokens(tmp_path):
    """The plain script and the engine path of gpu_throughput, on the tiny llama, 3 steps each."""
    model = make_llama(tmp_path / "llama", "tiny")
    train = write_jsonl(tmp_path / "train.jsonl", causal_rows(24, seed=0, max_words=40))
    spec = {"model_dir": str(model), "train_file": str(train), "steps": 3, "batch": 4, "lr": 1e-3, "seed": 1,
            "max_len": 64, "bf16": False, "skip_steps": 1, "packing": False, "gradient_checkpointing": False}
    plain = plain_train({**spec, "task": "causal_lm", "train_rows": read_jsonl(train), "valid_rows": None,
                         "output_dir": str(tmp_path / "plain"), "device": "cpu", **gpu_throughput.LORA})
    hub = gpu_throughput.run_hubtune({**spec, "output_dir": str(tmp_path / "hub")})
    packed = gpu_throughput.run_hubtune({**spec, "packing": True, "output_dir": str(tmp_path / "packed")})
    assert plain["steps"] == 3 and plain["train_phase_s"] > 0
    # Same data, seed and batch: the same real tokens on both sides, packed or not.
    assert plain["trained_tokens"] == hub["trained_tokens"] == packed["trained_tokens"] > 0
    assert packed["fed_positions"] < hub["fed_positions"]  # packing feeds no padding
    assert plain["trainable_params"] == hub["trainable_params"]
    for r in (plain, hub, packed):
        assert r["steady"]["steps"] == 2 and r["steady"]["tokens_per_s"] > 0


def test_flops_and_rates():
    from bench.workloads import llama_config

    config = llama_config("1b", vocab_size=30522)
    assert 1.0e9 < param_count(config) < 1.2e9
    assert gpu_throughput.flops_per_token(config, trainable=0, mean_context=0) == 4 * param_count(config)
    assert gpu_throughput.mean_context([1, 3]) == pytest.approx((1 + 6) / 4)
    assert steady_rate([1.0, 2.0, 4.0], [10, 20, 30], skip=1) == {"steps": 2, "seconds": 3.0, "tokens": 50,
                                                                   "tokens_per_s": 50 / 3}
    assert percentile([5, 1, 3, 2, 4], 0.5) == 3 and percentile(list(range(101)), 0.99) == 99


def test_embedded_job_breakdown_dispatch_and_overhead_report(tmp_path, capsys):
    """One `hubtune up`: a dispatch sample and a training-overhead job with its time breakdown."""
    bert = make_tiny_bert(tmp_path / "tiny-bert")
    data = write_classification_jsonl(tmp_path / "train.jsonl", n=32)
    valid = write_classification_jsonl(tmp_path / "valid.jsonl", n=8, seed=2)
    with embedded(tmp_path / "stack", models={"tiny/bert": bert}) as (stack, key, db_url):
        samples = dispatch_latency.measure(stack, key, db_url, jobs=1, data=data)
        w = training_overhead.Workload("tiny", "tiny/bert", bert, "sequence_classification", data, valid,
                                       steps=2, batch=8, lr=1e-3, max_len=32)
        hub = training_overhead.hubtune_job(stack, stack.client(key), db_url, w, files={})
    assert len(samples) == 1 and 0 < samples[0]["dispatch_ms"] < samples[0]["submit_to_running_ms"]
    assert 0 < hub["train_phase_s"] < hub["end_to_end_s"]
    assert hub["submit_to_running_s"] > 0 and hub["publish_s"] > 0 and hub["metric_events"] >= 2  # a row per step
    dispatch_latency.summarize("x", samples)
    plain = training_overhead.run_plain(w, tmp_path / "plain")
    assert plain["steps"] == 2 and plain["trained_tokens"] == hub["trained_tokens"]
    # The job's result records the positions its steps computed (padding included): the same batches.
    assert plain["fed_positions"] == hub["fed_positions"] >= hub["trained_tokens"] > 0
    summary = training_overhead.report(w, [plain], [hub])
    assert summary["ratio"] == pytest.approx(plain["train_phase_s"] / hub["train_phase_s"])
    assert "ratio plain/hubtune" in capsys.readouterr().out


def test_api_load_against_a_real_server(tmp_path):
    from hubtune.migrate import upgrade

    url = f"sqlite:///{tmp_path}/bench.db"
    upgrade(url)
    results = api_load.run("SQLite", url, "", jobs=100, requests=40, concurrency=8)
    assert set(results) == {"create job", "list jobs (10,000)", "list events"}
    for r in results.values():
        assert r["errors"] == 0 and r["rps"] > 0 and 0 < r["p50"] <= r["p99"]


def test_drive_counts_errors():
    class Resp:
        def __init__(self, code):
            self.status_code = code

    async def make(client, i):
        return Resp(500 if i % 2 else 200)

    # No server needed for the counting itself: the client is never used by `make`.
    out = asyncio.run(api_load.drive("http://127.0.0.1:9", "k", make, requests=10, concurrency=2))
    assert out["errors"] == 5 and out["rps"] > 0


@pytest.mark.parametrize("n, expected", [(5, None), (6, (0, 5)), (10, (1, 8)), (20, (5, 14))])
def test_median_interval_uses_the_binomial_order_statistics(n, expected):
    # Rounds in reverse order: the interval comes from the sorted rounds, (k-th, (n-k+1)-th) with P >= 95 %.
    rounds = [float(x) for x in range(n)][::-1]
    low, high = training_overhead.median_interval(rounds)
    if expected is None:
        assert (low, high) == (float("-inf"), float("inf"))  # 5 rounds cannot give 95 %
    else:
        assert (low, high) == expected
