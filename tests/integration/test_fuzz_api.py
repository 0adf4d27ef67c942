"""schemathesis against the running app's own /openapi.json: whatever it sends, valid
or not, nothing answers 5xx and every answer matches the documented schema."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from tests.conftest import examples
from tests.integration.conftest import Server

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def test_no_5xx_and_answers_match_the_schema(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9, [op.label for op in operations]
    for op in operations:

        @given(case=op.as_strategy())
        @examples(30, *HealthCheck)
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=server.url, headers=server.headers, checks=CHECKS)

        run()
