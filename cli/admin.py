"""`hubtune db upgrade`, `hubtune keys create`, `hubtune hub import`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="database administration").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=db_upgrade)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("create", help="create an API key and print it (it is shown only once)")
    k.add_argument("--name", default="")
    k.add_argument("--owner", default=None, help="owner of the key's jobs and files (default: the name, or 'admin')")
    k.add_argument("--admin", action="store_true", help="an admin key sees every owner's jobs")
    k.add_argument("--namespaces", default="", metavar="NS[,NS...]",
                   help="hub namespaces the key may publish to beyond its owner name (comma-separated)")
    k.set_defaults(func=keys_create)

    hub = sub.add_parser("hub", help="the model hub").add_subparsers(dest="hub_command", required=True)
    i = hub.add_parser("import", help="put a local model folder into the configured hub as REPO_ID")
    i.add_argument("path", type=Path)
    i.add_argument("repo_id")
    i.add_argument("--repo-type", default="model", choices=["model", "dataset"])
    i.set_defaults(func=hub_import)


def db_upgrade(_args: argparse.Namespace) -> int:
    from hubtune.migrate import upgrade
    from hubtune.settings import get_settings

    upgrade(get_settings().resolved_database_url)
    print("database is up to date")
    return 0


def keys_create(args: argparse.Namespace) -> int:
    from hubtune.db import session_scope
    from hubtune.keys import create_key

    from hubtune.namespaces import parse_namespaces

    owner = args.owner or args.name or "admin"
    try:
        namespaces = parse_namespaces(args.namespaces.split(","))
    except ValueError as exc:
        print(f"error: --namespaces: {exc}", file=sys.stderr)
        return 2
    with session_scope() as session:
        key = create_key(session, owner=owner, name=args.name, admin=args.admin, namespaces=namespaces)
    print(key)
    return 0


def hub_import(args: argparse.Namespace) -> int:
    from hubtune.settings import get_settings
    from worker.hub import hub_from_settings

    if not args.path.is_dir():
        print(f"error: {args.path} is not a folder", file=sys.stderr)
        return 2
    hub = hub_from_settings(get_settings())
    commit = hub.publish(args.repo_id, folder=args.path, message=f"import {args.path.name}",
                         repo_type=args.repo_type, private=False)
    print(f"{args.repo_id}@{commit}")
    return 0
