"""Many workers on one PostgreSQL: claimer threads run the real claim path over thousands of queued jobs.

    python -m bench.claim_sim [--claimers 50] [--jobs 10000] [--owners 10] [--limit 2] [--hold-ms 5]
                              [--json out.json]

A fresh migrated database gets `--jobs` queued jobs (bulk insert) spread over `--owners` owners (the
first owner has the most: weights 1, 1/2, 1/3, ...) and priorities 0-2. Each claimer is a thread with
a connection of its own that loops as worker/train.py's run_train does, without training:
`claim_next(queue, lease_seconds, max_running_per_owner)` with the worker's settings, then holds the job
for `--hold-ms` (reading the running jobs per owner: the sampled limit check), then moves it to
`succeeded` with `transition(..., expect_token=token)`. A claimer that gets None while jobs are queued
waits `--hold-ms` (a worker waits for its next doorbell) and tries again; it stops once none is queued.

Claim latency is each claim_next call's transaction, begin to commit (lock waits included), over every
call, Nones too; claims per second is the jobs over the time to drain the queue.

What is checked comes from two sides, the claimers' own records and the rows:
- double claims: a job claimed twice in the records, or a row with attempts != 1, a claim event count
  != 1, a lease token other than its claimer's, or a status other than succeeded;
- the per-owner running limit: the most jobs of one owner that were certainly running at once (from
  the records: claim committed -> finish started), and the most one sample saw;
- priority: a claim chooses between its call's start and the started_at it stamps on the row. It passed
  over job K when K, ahead of its job in claim_next's order (priority, then age), was queued and free
  all that time: K's claim call began after it (no limit) or, with a limit (claims one at a time under the
  claim lock), K's started_at is later. Allowed while K's owner is at its limit; a certain inversion
  when that owner had fewer than `limit` jobs that may have been running then. Races that only might
  have mattered are not counted;
- empty claims: None while such a job, of an owner with room, was queued and free for the whole call.
Threads share one Python process (and its GIL) and the machine's cores with PostgreSQL: latencies
include waiting for both.
"""

from __future__ import annotations

import argparse
import bisect
import json
import operator
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from functools import reduce
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stacks import percentile  # noqa: E402
from hubtune.ids import new_id  # noqa: E402
from hubtune.lifecycle import CLAIMED_BY, Status, claim_next, transition  # noqa: E402
from hubtune.models import Job, JobEvent  # noqa: E402
from hubtune.queue import DEFAULT_TRAIN_QUEUE  # noqa: E402
from hubtune.settings import Settings  # noqa: E402
from testkit.services import postgres_database  # noqa: E402

PRIORITIES, PRIORITY_WEIGHTS = (0, 1, 2), (6, 3, 1)
NEVER = float("inf")
SAMPLES = "(samples)"  # the number of samples a claimer took, beside its per-owner maxima


@dataclass(frozen=True)
class Config:
    claimers: int = 50
    jobs: int = 10_000
    owners: int = 10
    limit: int = 2  # the worker setting max_running_jobs_per_owner; 0: no limit (and no claim lock)
    hold_ms: float = 5.0
    seed: int = 0
    timeout_s: float = 600.0


@dataclass(frozen=True)
class QueuedJob:
    id: str
    owner: str
    priority: int
    created_at: float


@dataclass
class Attempt:
    """One claim_next call of one claimer. Times are time.time() seconds, the clock the claim stamps on
    the row (started_at: after it chose the job, before its UPDATE), so the two can be compared."""
    claimer: int
    start: float  # before the claim's transaction began
    committed: float  # after it committed
    job_id: str | None = None
    token: int | None = None
    finish_start: float = NEVER  # before the finishing transaction began
    finished: float = NEVER  # after it committed
    finished_ok: bool = False  # the token-guarded transition to succeeded matched


@dataclass
class Run:
    config: Config
    jobs: list[QueuedJob]
    attempts: list[Attempt]
    sampled_max: dict[str, int]
    samples: int
    wall_s: float
    rows: dict[str, int] = field(default_factory=dict)
    started_at: dict[str, float] = field(default_factory=dict)  # per job, from its row


# --- the jobs -----------------------------------------------------------------------------------------

def make_jobs(cfg: Config) -> list[QueuedJob]:
    """Owners skewed (owner-0 has the most jobs), priorities mostly 0; created one millisecond apart."""
    rng = random.Random(cfg.seed)
    owners = [f"owner-{i}" for i in range(cfg.owners)]
    weights = [1 / (i + 1) for i in range(cfg.owners)]
    base = time.time() - cfg.jobs
    return [QueuedJob(new_id("ftjob"), rng.choices(owners, weights)[0],
                      rng.choices(PRIORITIES, PRIORITY_WEIGHTS)[0], base + i / 1000) for i in range(cfg.jobs)]


def insert_jobs(engine: Engine, jobs: list[QueuedJob]) -> None:
    """One multi-row INSERT of queued rows with what a queued job has (as the tests' queued rows)."""
    rows = [{"id": j.id, "owner": j.owner, "status": Status.QUEUED.value, "queue": DEFAULT_TRAIN_QUEUE,
             "priority": j.priority, "model": "org/m", "training_file": "file-x", "seed": 1, "spec": {},
             "attempts": 0, "max_attempts": 3, "lease_token": 0, "created_at": j.created_at,
             "updated_at": j.created_at} for j in jobs]
    with Session(engine) as session, session.begin():
        session.execute(insert(Job), rows)


# --- the claimers -------------------------------------------------------------------------------------

class Claimers:
    """The claimer threads and what each recorded (its own lists: no locking between claimers)."""

    def __init__(self, engine: Engine, cfg: Config):
        self.engine, self.cfg = engine, cfg
        settings = Settings(max_running_jobs_per_owner=cfg.limit)
        # What run_train passes to claim_next, from the worker's settings.
        self.claim_args = {"lease_seconds": settings.lease_seconds,
                           "max_running_per_owner": settings.max_running_jobs_per_owner}
        self.start = threading.Barrier(cfg.claimers + 1)
        self.attempts: list[list[Attempt]] = [[] for _ in range(cfg.claimers)]
        self.sampled: list[Counter] = [Counter() for _ in range(cfg.claimers)]
        self.errors: list[BaseException] = []
        self.deadline = time.perf_counter() + cfg.timeout_s

    def run(self) -> float:
        """Start every claimer on its own connection, release them together; the wall time to drain."""
        threads = [threading.Thread(target=self._guarded, args=(i,), daemon=True) for i in range(self.cfg.claimers)]
        for t in threads:
            t.start()
        try:
            self.start.wait()
        except threading.BrokenBarrierError:
            pass  # a claimer failed before the start; its error is raised below
        began = time.perf_counter()
        for t in threads:
            t.join()
        if self.errors:
            raise self.errors[0]
        return time.perf_counter() - began

    def _guarded(self, index: int) -> None:
        try:
            self._loop(index)
        except BaseException as exc:  # noqa: BLE001 - re-raised by run() in the main thread
            self.errors.append(exc)
            self.start.abort()  # a claimer that could not connect must not leave the others waiting

    def _loop(self, index: int) -> None:
        hold = self.cfg.hold_ms / 1000
        with self.engine.connect() as conn, Session(bind=conn) as session:
            self.start.wait()
            while time.perf_counter() < self.deadline:
                attempt = self._claim(session, index)
                if attempt.job_id is None:
                    if not _any_queued(session):
                        return
                    self.attempts[index].append(attempt)
                    time.sleep(hold)  # a worker with nothing runnable waits for its next doorbell
                    continue
                self.attempts[index].append(attempt)
                self._hold(session, index, hold)
                self._finish(session, attempt)

    def _claim(self, session: Session, index: int) -> Attempt:
        start = time.time()
        with session.begin():
            claimed = claim_next(session, DEFAULT_TRAIN_QUEUE, owner=f"claimer-{index}", **self.claim_args)
        attempt = Attempt(index, start, time.time())
        if claimed is not None:
            attempt.job_id, attempt.token = claimed
        return attempt

    def _hold(self, session: Session, index: int, hold: float) -> None:
        """The simulated run: sample the running jobs per owner, then wait out the rest of `hold`."""
        until = time.perf_counter() + hold
        with session.begin():
            running = session.execute(select(Job.owner, func.count()).where(
                Job.status == Status.RUNNING.value).group_by(Job.owner)).all()
        sampled = self.sampled[index]
        for owner, count in running:
            sampled[owner] = max(sampled[owner], count)
        sampled[SAMPLES] += 1
        time.sleep(max(0.0, until - time.perf_counter()))

    def _finish(self, session: Session, attempt: Attempt) -> None:
        attempt.finish_start = time.time()
        with session.begin():
            attempt.finished_ok = transition(session, attempt.job_id, Status.SUCCEEDED, expect=Status.RUNNING,
                                             expect_token=attempt.token, message="Simulated run finished")
        attempt.finished = time.time()


def _any_queued(session: Session) -> bool:
    with session.begin():
        return session.execute(select(Job.id).where(
            Job.status == Status.QUEUED.value, Job.queue == DEFAULT_TRAIN_QUEUE).limit(1)).first() is not None


def simulate(url: str, cfg: Config) -> Run:
    """Insert the jobs into the (fresh) database at `url`, drain them with the claimers, read the rows."""
    engine = create_engine(url, poolclass=NullPool)  # one real connection per claimer, none shared
    try:
        jobs = make_jobs(cfg)
        insert_jobs(engine, jobs)
        claimers = Claimers(engine, cfg)
        wall = claimers.run()
        attempts = sorted((a for per in claimers.attempts for a in per), key=lambda a: a.start)
        samples = sum(c.pop(SAMPLES) for c in claimers.sampled)
        sampled = reduce(operator.or_, claimers.sampled)  # the most any claimer saw, per owner
        run = Run(cfg, jobs, attempts, dict(sampled), samples, wall)
        run.rows, run.started_at = row_check(engine, attempts)
        return run
    finally:
        engine.dispose()


# --- the checks ---------------------------------------------------------------------------------------

def row_check(engine: Engine, attempts: list[Attempt]) -> tuple[dict[str, int], dict[str, float]]:
    """What the rows say, against the claimers' records: every job succeeded once, under its own token.
    And each job's started_at."""
    tokens = {a.job_id: a.token for a in attempts if a.job_id}
    with Session(engine) as s:
        rows = s.execute(select(Job.id, Job.status, Job.attempts, Job.lease_token, Job.started_at)).all()
        claim_events = Counter(s.scalars(select(JobEvent.job_id).where(JobEvent.data[CLAIMED_BY].is_not(None))))
    checks = {
        "not_succeeded": sum(r.status != Status.SUCCEEDED.value for r in rows),
        "attempts_not_1": sum(r.attempts != 1 for r in rows),
        "claim_events_not_1": sum(claim_events[r.id] != 1 for r in rows),
        "token_mismatch": sum(tokens.get(r.id) != r.lease_token for r in rows),
    }
    return checks, {r.id: r.started_at for r in rows if r.started_at is not None}


def double_claims(attempts: list[Attempt]) -> dict[str, int]:
    """From the records: jobs claimed more than once, and of those, claimed by two claimers at once."""
    by_job = defaultdict(list)
    for a in attempts:
        if a.job_id:
            by_job[a.job_id].append(a)
    twice = [sorted(c, key=lambda a: a.start) for c in by_job.values() if len(c) > 1]
    at_once = sum(any(x.finished > y.start for x, y in zip(c, c[1:])) for c in twice)
    return {"jobs_claimed_twice": len(twice), "claimed_at_once": at_once}


class Running:
    """Per owner, when its jobs may have been running: from the claim's started_at (its UPDATE commits
    later) to the end of its finish (or never, when the finish did not land)."""

    def __init__(self, claims: list[Attempt], owner_of: dict[str, str], started_at: dict[str, float]):
        starts, ends = defaultdict(list), defaultdict(list)
        for a in claims:
            owner = owner_of[a.job_id]
            starts[owner].append(started_at.get(a.job_id, a.start))
            ends[owner].append(a.finished if a.finished_ok else NEVER)
        self.starts = {o: sorted(v) for o, v in starts.items()}
        self.ends = {o: sorted(v) for o, v in ends.items()}

    def at_most(self, owner: str, t0: float, t1: float) -> int:
        """How many of `owner`'s jobs may have been running at some moment of [t0, t1)."""
        begun = bisect.bisect_left(self.starts.get(owner, []), t1)
        over = bisect.bisect_right(self.ends.get(owner, []), t0)
        return begun - over


def certain_max_running(claims: list[Attempt], owner_of: dict[str, str]) -> dict[str, int]:
    """Per owner, the most jobs certainly running at once: each from its claim's commit to the start of
    its finish (the row was `running` at least that long). A sweep over the interval ends."""
    events = defaultdict(list)
    for a in claims:
        events[owner_of[a.job_id]] += [(a.committed, 1), (a.finish_start, -1)]
    most = {}
    for owner, points in events.items():
        level = peak = 0
        for _, step in sorted(points):  # at a tie an end (-1) comes before a start
            level += step
            peak = max(peak, level)
        most[owner] = peak
    return most


def claimable_since(run: Run, claims: list[Attempt]) -> dict[str, float]:
    """Per job, a time before which it was certainly queued and free for any claim to take.

    Without a limit, the start of the claim_next call that took it (no row lock on it before). With one,
    claims hold the claim lock from before choosing until commit, so they run one after the other in
    started_at order: a job stamped later was still queued, and unlocked, while an earlier claim chose
    (the limit checks of this bench show whether that lock held)."""
    if run.config.limit:
        return dict(run.started_at)
    since = {}
    for a in claims:  # sorted by start: the first claim of a job counts
        since.setdefault(a.job_id, a.start)
    return since


class Order:
    """claim_next's order (priority, then age) and, per owner, its best job still claimable after a time."""

    def __init__(self, jobs: list[QueuedJob], since: dict[str, float]):
        ordered = sorted(jobs, key=lambda j: (-j.priority, j.created_at, j.id))
        self.rank = {j.id: i for i, j in enumerate(ordered)}
        self.none = len(jobs)
        per_owner = defaultdict(list)
        for j in jobs:
            per_owner[j.owner].append((since.get(j.id, NEVER), self.rank[j.id]))
        self.since, self.best_after = {}, {}
        for owner, pairs in per_owner.items():
            pairs.sort()
            self.since[owner] = [t for t, _ in pairs]
            best, suffix = self.none, [self.none]
            for _, rank in reversed(pairs):
                best = min(best, rank)
                suffix.append(best)
            self.best_after[owner] = suffix[::-1]

    def best_claimable_after(self, owner: str, t: float) -> int:
        """The best rank among `owner`'s jobs claimable until after t; self.none if none."""
        return self.best_after[owner][bisect.bisect_right(self.since[owner], t)]


def order_checks(run: Run) -> dict[str, int]:
    """Claims that passed over a better job that was claimable while they chose; of those, the certain
    priority inversions (its owner certainly had room under the limit then); and the certain empty
    claims among the Nones.

    A claim chose between its call's start and its started_at; a None, between its call's start and its
    commit."""
    owner_of = {j.id: j.owner for j in run.jobs}
    claims = [a for a in run.attempts if a.job_id]
    order = Order(run.jobs, claimable_since(run, claims))
    running, limit = Running(claims, owner_of, run.started_at), run.config.limit

    def better(rank: int, t1: float) -> list[str]:
        return [o for o in order.since if order.best_claimable_after(o, t1) < rank]

    def had_room(owner: str, t0: float, t1: float) -> bool:
        return not limit or running.at_most(owner, t0, t1) < limit

    passed_over = inversions = empty = 0
    for a in run.attempts:
        if a.job_id:
            chose = run.started_at.get(a.job_id, a.committed)
            owners = better(order.rank[a.job_id], chose)
            passed_over += bool(owners)
            inversions += any(had_room(o, a.start, chose) for o in owners)
        else:
            empty += any(had_room(o, a.start, a.committed) for o in better(order.none, a.committed))
    return {"passed_over": passed_over, "certain_inversions": inversions, "certain_empty_claims": empty}


def fairness(run: Run, first: int) -> dict[str, dict]:
    """Per owner: share of the jobs, share of the first `first` claims, most running (certain, sampled),
    and when its last job finished (seconds after the start)."""
    owner_of = {j.id: j.owner for j in run.jobs}
    claims = [a for a in run.attempts if a.job_id]
    began = min(a.start for a in run.attempts)
    jobs = Counter(owner_of.values())
    early = Counter(owner_of[a.job_id] for a in sorted(claims, key=lambda a: a.committed)[:first])
    certain = certain_max_running(claims, owner_of)
    done = defaultdict(float)
    for a in claims:
        done[owner_of[a.job_id]] = max(done[owner_of[a.job_id]], a.finished - began)
    return {o: {"jobs_pct": 100 * jobs[o] / len(run.jobs), "first_claims_pct": 100 * early[o] / max(1, first),
                "max_running_certain": certain.get(o, 0), "max_running_sampled": run.sampled_max.get(o, 0),
                "last_finish_s": done[o]} for o in sorted(jobs, key=lambda o: -jobs[o])}


def summarize(run: Run) -> dict:
    claims = [a for a in run.attempts if a.job_id]
    latencies = [(a.committed - a.start) * 1000 for a in run.attempts]
    per_owner = fairness(run, first=max(1, len(run.jobs) // 10))
    claimed = {a.job_id for a in claims}
    return {
        "config": asdict(run.config),
        "wall_s": run.wall_s,
        "claims": len(claims),
        "claims_per_s": len(claims) / run.wall_s,
        "claim_ms": {q: percentile(latencies, p) for q, p in (("p50", .5), ("p95", .95), ("p99", .99))}
        | {"max": max(latencies)},
        "jobs_never_claimed": len(run.jobs) - len(claimed),
        "finishes_refused": sum(not a.finished_ok for a in claims),
        "double_claims": double_claims(run.attempts),
        "rows": run.rows,
        "nones_while_queued": len(run.attempts) - len(claims),
        **order_checks(run),
        "max_running_certain": max(o["max_running_certain"] for o in per_owner.values()),
        "max_running_sampled": max(run.sampled_max.values(), default=0),
        "samples": run.samples,
        "owners": per_owner,
    }


# --- the command --------------------------------------------------------------------------------------

def report(f: dict) -> None:
    c = f["config"]
    print(f"{c['claimers']} claimers, {c['jobs']} jobs, {c['owners']} owners, limit {c['limit'] or 'none'} "
          f"running per owner, hold {c['hold_ms']:g} ms")
    print(f"  drained in {f['wall_s']:.1f} s: {f['claims_per_s']:.0f} claims/s; claim ms p50 {f['claim_ms']['p50']:.1f}"
          f" p95 {f['claim_ms']['p95']:.1f} p99 {f['claim_ms']['p99']:.1f} max {f['claim_ms']['max']:.1f}")
    print(f"  double claims: records {f['double_claims']}, rows {f['rows']}; never claimed {f['jobs_never_claimed']},"
          f" finishes refused {f['finishes_refused']}")
    print(f"  None while jobs were queued: {f['nones_while_queued']}, of them with certainly runnable work "
          f"{f['certain_empty_claims']}")
    print(f"  claims that passed over a better queued job: {f['passed_over']}, of them certain priority inversions"
          f" (its owner certainly under the limit) {f['certain_inversions']}")
    print(f"  most running of one owner: {f['max_running_certain']} certain, {f['max_running_sampled']} sampled "
          f"({f['samples']} samples)")
    print(f"  {'owner':9s} {'jobs %':>7s} {'first 10 % of claims %':>23s} {'max running':>12s} {'last finish s':>14s}")
    for owner, o in f["owners"].items():
        print(f"  {owner:9s} {o['jobs_pct']:7.1f} {o['first_claims_pct']:23.1f} "
              f"{o['max_running_certain']:>5d} / {o['max_running_sampled']:<4d} {o['last_finish_s']:14.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claimers", type=int, default=Config.claimers)
    parser.add_argument("--jobs", type=int, default=Config.jobs)
    parser.add_argument("--owners", type=int, default=Config.owners)
    parser.add_argument("--limit", type=int, default=Config.limit, help="max running jobs per owner; 0: none")
    parser.add_argument("--hold-ms", type=float, default=Config.hold_ms)
    parser.add_argument("--seed", type=int, default=Config.seed)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    cfg = Config(args.claimers, args.jobs, args.owners, args.limit, args.hold_ms, args.seed)
    with postgres_database("hubtune_claims") as url:
        figures = summarize(simulate(url, cfg))
    if args.json:  # first: a reader that stops early (| head) must not cost the figures
        args.json.write_text(json.dumps(figures, indent=2))
    report(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
