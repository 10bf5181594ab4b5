"""Inject each fault of RELIABILITY.md N times into real hubtune processes and print the table.

    python -m bench.faults [--runs 3] [--only sigkill,redis] [--json out.json]

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

from testkit import faults  # noqa: E402

SCENARIOS = {
    "sigkill": faults.sigkill_mid_training,
    "sigstop": faults.sigstop_past_lease,
    "dying": faults.keeps_dying,
    "redis": faults.redis_restart_with_jobs_queued,
    "postgres": faults.postgres_restart_mid_job,
    "server": faults.server_restart_mid_job,
    "duplicate": faults.duplicate_train_message,
}
# What "recover" means for each fault.
RECOVERY = {
    "sigkill": "fault -> another worker resumes from the checkpoint",
    "sigstop": "freeze -> another worker resumes (old one fenced out on waking)",
    "dying": "last death -> job failed with worker_lost (2 attempts)",
    "redis": "restart -> every queued job claimed (a train worker is started at the restart)",
    "postgres": "restart begins -> the worker's next heartbeat lands (same worker, same lease)",
    "server": "kill -> server healthy again (2 s down)",
    "duplicate": "doorbells sent -> the one claim",
}


def _dump(lab) -> None:
    rows = lab.sql("SELECT id, status, stage, lease_owner, attempts FROM jobs ORDER BY created_at DESC LIMIT 1")
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
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hubtune-faults-") as tmp:
        lab = faults.Lab(Path(tmp))
        try:
            lab.start()
            for name in args.only.split(","):
                outcomes = []
                for i in range(args.runs):
                    began = time.monotonic()
                    try:
                        outcomes.append(SCENARIOS[name](lab))
                    except Exception:
                        _dump(lab)  # what the processes and the job said, before the lab is torn down
                        raise
                    finally:
                        lab.stop_workers()
                    o = outcomes[-1]
                    print(f"{name} run {i + 1}: lost {o.lost}, twice {o.twice}, re-queued {o.requeued}, "
                          f"recover {o.recover_s} s "
                          f"({time.monotonic() - began:.0f} s)", file=sys.stderr, flush=True)
                rows.append(_row(name, outcomes))
        finally:
            lab.close()
    print(_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _row(name: str, outcomes: list[faults.Outcome]) -> dict:
    times = [o.recover_s for o in outcomes if o.recover_s is not None]
    return {
        "fault": outcomes[0].fault, "runs": len(outcomes), "jobs": sum(len(o.jobs) for o in outcomes),
        "lost": sum(o.lost for o in outcomes), "twice": sum(o.twice for o in outcomes),
        "requeued": sum(o.requeued for o in outcomes),
        "recover_median_s": round(statistics.median(times), 1) if times else None,
        "recover_max_s": max(times) if times else None, "recovery": RECOVERY[name],
    }


def _table(rows: list[dict]) -> str:
    lines = ["| Fault injected | Times | Jobs | Jobs lost | Jobs run twice | Re-queues "
             "| Time to recover, median / max (s) | Measured from |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fault']} | {r['runs']} | {r['jobs']} | {r['lost']} | {r['twice']} | {r['requeued']} | "
                     f"{r['recover_median_s']} / {r['recover_max_s']} | {r['recovery']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
