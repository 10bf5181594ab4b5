"""The `hubtune` command. This package is the one edge module allowed to start every component, so it
imports server/, worker/ and plugin/ — lazily, inside the commands that need them."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _data_dir(value: str | None) -> None:
    # Settings are read from the environment once; children (the worker) inherit it too.
    if value:
        os.environ["HUBTUNE_DATA_DIR"] = str(Path(value).resolve())
        from hubtune.settings import get_settings

        get_settings.cache_clear()


def build_parser() -> argparse.ArgumentParser:
    from hubtune.cli import admin, demo, embedded, services, user

    parser = argparse.ArgumentParser(prog="hubtune", description="Self-hosted fine-tuning for Hugging Face models.")
    parser.add_argument("--data-dir", help="where the embedded database, queue, storage and hub live")
    sub = parser.add_subparsers(dest="command", required=True)
    embedded.add_commands(sub)
    services.add_commands(sub)
    admin.add_commands(sub)
    demo.add_commands(sub)
    user.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _data_dir(getattr(args, "data_dir", None))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
