"""`hubtune server` and `hubtune worker`: the components of a distributed deployment."""

from __future__ import annotations

import argparse

from hubtune.queue import ALL_QUEUES


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="run the REST API server")
    p.add_argument("--host", default=None, help="bind address (default HUBTUNE_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default HUBTUNE_PORT, 8000)")
    p.add_argument("--no-migrate", action="store_true", help="do not apply database migrations first")
    p.add_argument("--no-sweeper", action="store_true",
                   help="do not run the sweeper in this process (run `hubtune sweeper` elsewhere instead)")
    p.set_defaults(func=run_server)

    s = sub.add_parser("sweeper", help="re-queue jobs of dead workers and re-ring lost doorbells, periodically")
    s.add_argument("--once", action="store_true", help="one pass, print what it did, and exit")
    s.set_defaults(func=run_sweeper)

    w = sub.add_parser("worker", help="run a Celery worker")
    w.add_argument("--queues", default=",".join(ALL_QUEUES), help="comma-separated queues to serve")
    w.add_argument("--concurrency", type=int, default=None, help="task processes (default HUBTUNE_WORKER_CONCURRENCY)")
    w.add_argument("--max-tasks-per-child", type=int, default=None,
                   help="replace a task process after this many tasks (default HUBTUNE_WORKER_MAX_TASKS_PER_CHILD, "
                        "unset: reuse it); 1 on training workers")
    w.add_argument("--name", default=None, help="Celery node name, e.g. train@%%h (default celery@<host>)")
    w.add_argument("--loglevel", default="INFO")
    w.set_defaults(func=run_worker)


def check_deployment(settings) -> None:
    from hubtune.deployment import check

    check(settings)  # a clear error before anything starts (hubtune.deployment says what and why)


def run_server(args: argparse.Namespace) -> int:
    import uvicorn

    from hubtune.migrate import upgrade
    from hubtune.settings import get_settings
    from server.app import create_app

    settings = get_settings()
    check_deployment(settings)
    if not args.no_migrate:
        upgrade(settings.resolved_database_url)
    if not args.no_sweeper:
        # Every server process sweeps: wherever the API runs, lost jobs are recovered. Several
        # sweepers at once are harmless (guarded UPDATEs).
        from hubtune.sweeper import start_thread

        start_thread(settings)
    from cli.embedded import SERVER_STOP_SECONDS

    # On SIGTERM, in-flight requests get a bounded time (uvicorn's default waits for them without limit).
    uvicorn.run(create_app(settings), host=args.host or settings.host, port=args.port or settings.port,
                log_level="info", timeout_graceful_shutdown=SERVER_STOP_SECONDS)
    return 0


def run_worker(args: argparse.Namespace) -> int:
    from hubtune.settings import get_settings
    from worker.app import app

    settings = get_settings()
    check_deployment(settings)
    argv = [
        "worker", "--queues", args.queues, "--loglevel", args.loglevel,
        "--concurrency", str(args.concurrency or settings.worker_concurrency),
        "--pool", "prefork", "--without-gossip", "--without-mingle",
    ]
    if args.max_tasks_per_child:
        argv += ["--max-tasks-per-child", str(args.max_tasks_per_child)]
    if args.name:
        argv += ["--hostname", args.name]
    app.worker_main(argv)
    return 0


def run_sweeper(args: argparse.Namespace) -> int:
    import logging
    import threading

    from hubtune.settings import get_settings
    from hubtune.sweeper import run_forever, sweep

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_deployment(get_settings())
    if args.once:
        report = sweep(get_settings())
        print(f"re-queued {len(report.requeued)}, failed {len(report.failed)}, doorbells {len(report.rung)}")
        return 0
    run_forever(threading.Event(), get_settings())
    return 0
