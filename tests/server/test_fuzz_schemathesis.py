"""Fuzzing: schemathesis generates requests from the server's own OpenAPI schema (valid and invalid),
sends them in-process with an authenticated key on PostgreSQL, and checks that no answer is a 500 and
that every answer's status code and body match what the schema documents.

Deterministic (derandomized) and bounded so that it runs in well under two minutes.
"""

from __future__ import annotations

import pytest
import schemathesis

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server.apitest_helpers import auth, make_env, upload  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 50


@pytest.fixture(scope="module")
def fuzz_env(postgres_url, tmp_path_factory):
    env = make_env(postgres_url, tmp_path_factory.mktemp("fuzz") / "data")
    key = env.key()
    f = upload(env.client, key)  # something to find, so that not every id is unknown
    env.client.post("/v1/fine_tuning/jobs", headers=auth(key),
                    json={"model": "org/model", "training_file": f["id"]})
    return env, key


def _operations(env):
    schema = schemathesis.openapi.from_asgi("/openapi.json", env.app)
    return [result.ok() for result in schema.get_all_operations()]


# schemathesis' own pytest integration (`schema.parametrize`) does not run under pytest 9, so each
# operation gets a hypothesis test built from its strategies here.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_server_error_and_answers_match_the_schema(fuzz_env, mode):
    env, key = fuzz_env
    failures: list[str] = []
    operations = _operations(env)
    assert len(operations) >= 25  # every route of the API is in the schema
    for operation in operations:

        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        @given(case=operation.as_strategy(mode))
        def check(case) -> None:
            case.call_and_validate(headers=auth(key), checks=CHECKS)

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid (no parameters, or a free-form body)
            assert mode == GenerationMode.NEGATIVE, operation.path
        except Exception as exc:  # collect every operation's failure, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
