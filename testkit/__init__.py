"""The shared harness of tests/ and bench/: real PostgreSQL and Redis (services), real hubtune processes
(stack), fault injection (faults) and tiny offline models and data sets (tiny_models).

It lives outside tests/ so that bench/ imports no tests (DESIGN §1), and outside the wheel on purpose:
pyproject.toml's package list leaves it out, like bench/ and tests/. It needs pytest and the training
stack (neither is a runtime dependency of the server image), it is only ever run from a checkout, where
the repository root is on sys.path (pytest's rootdir, bench's `sys.path.insert`), and installing it would
put one more generic top-level name into every user's site-packages for nothing they run.
It may import the product (it starts `python -m cli` and mirrors cli's worker layout); it imports no tests.
"""
