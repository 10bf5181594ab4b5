"""Inject each fault of RELIABILITY.md N times into real hubtune processes and print the table.

    python -m bench.faults [--runs 3] [--only sigkill,redis] [--json out.json] [--keep-going]

Every run uses the scenarios of testkit/faults.py (the reliability tests' own): a private
PostgreSQL cluster and redis-server on spare loopback ports, a `hubtune server` with its sweeper,
and `hubtune worker` processes that are SIGKILLed, frozen, or cut off from their services. Settings are
the tests' quick ones (lease 5 s, heartbeat 1 s, sweep every 1 s, doorbells re-rung after 3 s), so the
times to recover scale with them: lease_seconds + sweep_interval_seconds bound the detection of a dead
worker, requeue_after_seconds that of a lost doorbell.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit import faults, machines  # noqa: E402

# name -> (the lab it runs in, the scenario). "one": one machine, the data dir shared (testkit/faults.py);
# "machines": a data dir per worker, object storage and an hf hub between them (testkit/machines.py).
SCENARIOS = {
    "sigkill": ("one", faults.sigkill_mid_training),
    "sigstop": ("one", faults.sigstop_past_lease),
    "dying": ("one", faults.keeps_dying),
    "redis": ("one", faults.redis_restart_with_jobs_queued),
    "postgres": ("one", faults.postgres_restart_mid_job),
    "server": ("one", faults.server_restart_mid_job),
    "duplicate": ("one", faults.duplicate_train_message),
    "machine": ("machines", machines.sigkill_then_another_machine),
    "store-checkpoint": ("machines", machines.storage_down_during_checkpoint),
    "store-upload": ("machines", machines.storage_down_during_upload),
    "disk-full": ("machines", machines.disk_full_on_a_worker),
}
LABS = {"one": faults.Lab, "machines": machines.machines_lab}
# What "recover" means for each fault.
RECOVERY = {
    "sigkill": "fault -> another worker resumes from the checkpoint",
    "sigstop": "freeze -> another worker resumes (old one fenced out on waking)",
    "dying": "last death -> job failed with worker_lost (2 attempts)",
    "redis": "restart -> every queued job claimed (a train worker is started at the restart)",
    "postgres": "restart begins -> the worker's next heartbeat lands (same worker, same lease)",
    "server": "kill -> server healthy again (2 s down)",
    "duplicate": "doorbells sent -> the one claim",
    "machine": "fault -> a worker on another machine (empty data dir) resumes from object storage",
    "store-checkpoint": "store back -> the next checkpoint saved (the save waited the outage out)",
    "store-upload": "store down -> the upload answered 200 (it waited the outage out)",
    "disk-full": "disk filled -> another machine resumes the job",
}


def _dump(lab) -> None:
    rows = lab.sql("SELECT id, status, stage, lease_owner, attempts, error FROM jobs ORDER BY created_at DESC LIMIT 1")
    if rows:
        print(f"job: {dict(rows[0]._mapping)}", file=sys.stderr)
        for e in lab.events(rows[0].id):
            if e.type != "metrics":
                print(f"  {e.created_at:.2f} {e.message}", file=sys.stderr)
        print(f"  steps: {lab.steps(rows[0].id)[-12:]}", file=sys.stderr)
    print(lab.stack.logs()[-8000:], file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-going", action="store_true",
                        help="count a run that raised as failed and go on (its logs are printed)")
    args = parser.parse_args(argv)
    names = args.only.split(",")
    rows, began = [], time.monotonic()
    for kind in dict.fromkeys(SCENARIOS[n][0] for n in names):
        with tempfile.TemporaryDirectory(prefix="hubtune-faults-") as tmp:
            lab = LABS[kind](Path(tmp))
            try:
                lab.start()
                rows += [_scenario(lab, name, args) for name in names if SCENARIOS[name][0] == kind]
            finally:
                lab.close()
    print(_table(rows))
    print(f"\n{len(rows)} scenarios x {args.runs} runs in {(time.monotonic() - began) / 60:.1f} min", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _scenario(lab, name: str, args) -> dict:
    outcomes, failed = [], 0
    for i in range(args.runs):
        began = time.monotonic()
        try:
            outcomes.append(SCENARIOS[name][1](lab))
            if outcomes[-1].lost or outcomes[-1].twice:
                _dump(lab)  # a run that lost a job or ran one twice: why, while the lab still has it
        except Exception as exc:
            _dump(lab)  # what the processes and the job said, before the lab is torn down
            if not args.keep_going:
                raise
            failed += 1
            print(f"{name} run {i + 1}: FAILED ({type(exc).__name__}: {str(exc)[:300]})", file=sys.stderr, flush=True)
            continue
        finally:
            lab.stop_workers()
        o = outcomes[-1]
        print(f"{name} run {i + 1}: lost {o.lost}, twice {o.twice}, re-queued {o.requeued}, "
              f"recover {o.recover_s} s ({time.monotonic() - began:.0f} s)", file=sys.stderr, flush=True)
    return _row(name, outcomes, failed=failed, runs=args.runs)


def _row(name: str, outcomes: list[faults.Outcome], *, failed: int, runs: int) -> dict:
    times = [o.recover_s for o in outcomes if o.recover_s is not None]
    clean = sum(o.lost == 0 and o.twice == 0 for o in outcomes)
    return {
        "fault": outcomes[0].fault if outcomes else name, "runs": runs, "passed": clean, "failed_runs": failed,
        "jobs": sum(len(o.jobs) for o in outcomes),
        "lost": sum(o.lost for o in outcomes), "twice": sum(o.twice for o in outcomes),
        "requeued": sum(o.requeued for o in outcomes),
        "recover_median_s": round(statistics.median(times), 1) if times else None,
        "recover_max_s": max(times) if times else None, "recovery": RECOVERY[name],
    }


def _table(rows: list[dict]) -> str:
    lines = ["| Fault injected | Passed | Jobs | Jobs lost | Jobs run twice | Re-queues "
             "| Time to recover, median / max (s) | Measured from |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fault']} | {r['passed']} of {r['runs']} | {r['jobs']} | {r['lost']} | {r['twice']} | {r['requeued']} | "
                     f"{r['recover_median_s']} / {r['recover_max_s']} | {r['recovery']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
