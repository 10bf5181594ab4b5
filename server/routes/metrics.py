"""GET /metrics for Prometheus. Every figure is read from the database at scrape time, so any number of
server processes answer the same and nothing is lost on restart."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from hubtune.lifecycle import Status
from hubtune.models import Job
from hubtune.settings import Settings
from server.routes.queues import DONE, queue_counts
from server.routes.workers import online_workers

router = APIRouter(tags=["monitoring"])

# Seconds: fine-tuning jobs run from a minute to a day.
DURATION_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400)


class DatabaseCollector:
    def __init__(self, session: Session, settings: Settings) -> None:
        self.session, self.settings = session, settings

    def collect(self):
        yield self._jobs()
        yield from self._queues()
        yield self._durations()
        yield from self._workers()

    def _jobs(self) -> GaugeMetricFamily:
        g = GaugeMetricFamily("hubtune_jobs", "Fine-tuning jobs by status.", labels=["status"])
        counts = dict(self.session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        for status in Status:
            g.add_metric([status.value], counts.get(status.value, 0))
        return g

    def _queues(self):
        depth = GaugeMetricFamily("hubtune_queue_depth", "Jobs waiting in each queue.", labels=["queue"])
        running = GaugeMetricFamily("hubtune_queue_running", "Jobs running from each queue.", labels=["queue"])
        for queue, c in sorted(queue_counts(self.session).items()):
            depth.add_metric([queue], c["waiting"])
            running.add_metric([queue], c["running"])
        yield depth
        yield running

    def _durations(self) -> HistogramMetricFamily:
        duration = Job.finished_at - Job.started_at
        done = (Job.status.in_(DONE), Job.started_at.is_not(None), Job.finished_at.is_not(None))
        columns = [func.sum(case((duration <= b, 1), else_=0)) for b in DURATION_BUCKETS]
        row = self.session.execute(select(func.count(), func.coalesce(func.sum(duration), 0.0), *columns)
                                   .where(*done)).one()
        total, seconds, cumulative = row[0], float(row[1] or 0), [int(v or 0) for v in row[2:]]
        buckets = [(str(float(b)), c) for b, c in zip(DURATION_BUCKETS, cumulative)] + [("+Inf", total)]
        return HistogramMetricFamily("hubtune_job_duration_seconds", "Run time of finished jobs (start to end).",
                                     buckets=buckets, sum_value=seconds)

    def _workers(self):
        workers = online_workers(self.session, self.settings)
        online = GaugeMetricFamily("hubtune_workers_online", "Worker processes with a recent heartbeat.")
        online.add_metric([], len(workers))
        yield online
        labels = ["worker", "gpu", "name"]
        total = GaugeMetricFamily("hubtune_gpu_memory_total_bytes", "GPU memory.", labels=labels)
        used = GaugeMetricFamily("hubtune_gpu_memory_used_bytes", "GPU memory in use, as the worker reported.",
                                 labels=labels)
        util = GaugeMetricFamily("hubtune_gpu_utilization_ratio", "GPU busy fraction (0-1), as the worker reported.",
                                 labels=labels)
        for w in workers:
            for i, gpu in enumerate((w.resources or {}).get("gpus") or []):
                lab = [w.id, str(i), str(gpu.get("name", ""))]
                if gpu.get("memory_bytes") is not None:
                    total.add_metric(lab, gpu["memory_bytes"])
                if gpu.get("memory_used_bytes") is not None:
                    used.add_metric(lab, gpu["memory_used_bytes"])
                if gpu.get("utilization") is not None:
                    util.add_metric(lab, gpu["utilization"])
        yield from (total, used, util)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    with request.app.state.sessionmaker() as session:
        registry.register(DatabaseCollector(session, request.app.state.settings))
        body = generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
