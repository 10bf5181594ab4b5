"""What several machines must agree on, checked when a process starts.

With HUBTUNE_STORAGE_URL set, the server and the workers run on machines that share no file system, so
nothing they must agree on may be generated into one machine's data dir: the key that encrypts hub
credentials, the dashboard's session secret, the notification signing secret, the database, the broker
and the hub (the `local` hub is a folder on one machine).
"""

from __future__ import annotations

from hubtune.settings import Settings

SHARED_SECRETS = {
    "secret_key": "encrypts the owners' hub tokens; every machine must decrypt them",
    "session_secret": "signs dashboard sessions; every server must accept them",
    "webhook_secret": "signs completion notifications; receivers check one secret",
}


class DeploymentError(ValueError):
    """A setting that several machines need is missing; the message names each one."""

    exit_code = 2


def check(settings: Settings) -> None:
    problems = problems_of(settings)
    if problems:
        raise DeploymentError("HUBTUNE_STORAGE_URL is set (machines that share no file system), so: "
                              + "; ".join(problems))


def problems_of(settings: Settings) -> list[str]:
    if not settings.storage_url:
        return []
    from hubtune.storage.s3 import parse_url

    problems = []
    try:
        parse_url(settings.storage_url)
    except ValueError as exc:
        problems.append(str(exc))
    for name, why in SHARED_SECRETS.items():
        if getattr(settings, name) is None:
            problems.append(f"set HUBTUNE_{name.upper()} to the same value on every machine (it {why})")
    if settings.hub_backend == "local":
        problems.append("the local hub is a folder on one machine: use an hf-compatible hub "
                        "(HUBTUNE_HUB_BACKEND=hf, HUBTUNE_HUB_ENDPOINT, HUBTUNE_HUB_TOKEN)")
    if not settings.database_url:
        problems.append("set HUBTUNE_DATABASE_URL (the embedded SQLite database is a file on one machine)")
    if not settings.broker_url:
        problems.append("set HUBTUNE_BROKER_URL (the embedded queue is a folder on one machine)")
    return problems
