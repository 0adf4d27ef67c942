"""Fuzzing the parsers a client or a config author can reach: the JSON and msgpack
decoders with the wire models, and the rule language. Only the documented errors come
out (WireError with its status and code, RuleError), never another exception."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgpack
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from decisioning.errors import RuleError
from serving.wire import DEFAULT, WireError, decode_body, validate
from tests.conftest import examples
from tests.unit.decisioning.policy.test_rules import run

MODELS = (DEFAULT.EventIn, DEFAULT.DecideIn, DEFAULT.OutcomeIn)
CODES = {
    400: {"invalid_json", "invalid_msgpack", "empty_body", "too_deep"},
    413: {"body_too_large"},
    415: {"unsupported_media_type"},
    422: {"missing_field", "unknown_field", "invalid_field"},
}
# big nested inputs are the point here, however long they take to build
FUZZ = examples(
    400, HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example
)

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)
# documents shaped like requests, with wrong types and values mixed in
request_like = st.fixed_dictionaries(
    {},
    optional={
        "customer_id": json_like,
        "type": json_like,
        "channel": json_like,
        "ts": json_like,
        "properties": json_like,
        "context": json_like,
        "event": json_like,
        "limit": json_like,
        "decision_id": json_like,
        "action_id": json_like,
        "outcome": json_like,
    },
)


def _decode_and_validate(body: bytes, ctype: str) -> None:
    try:
        data = decode_body(body, ctype, 4096)
        for model in MODELS:
            try:
                validate(model, data)
            except WireError as e:
                assert e.code in CODES[e.status], (e.status, e.code)
    except WireError as e:
        assert e.code in CODES[e.status], (e.status, e.code)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["application/json", "application/msgpack"]))
def test_random_bytes(body: bytes, ctype: str) -> None:
    _decode_and_validate(body, ctype)


@FUZZ
@given(request_like | json_like)
def test_request_shaped_documents(doc: Any) -> None:
    try:
        as_json = json.dumps(doc).encode()  # NaN/Infinity included: the decoder refuses them
    except (ValueError, OverflowError):
        as_json = b"{}"
    _decode_and_validate(as_json, "application/json")
    try:
        packed = msgpack.packb(doc)
    except (OverflowError, ValueError, TypeError):
        return
    _decode_and_validate(packed, "application/msgpack")


rule_text = st.text(
    alphabet=st.sampled_from(list("()<>=!.,+-*/% \"'0123456789abcdefgilmnoprstuvy_[]\n\t")),
    max_size=60,
) | st.sampled_from(
    ["profile.age", "profile.segment", "consent.email", "context.page", "action.value"]
).flatmap(
    lambda f: st.text(
        alphabet=st.sampled_from(list(" ()<>=!+-*/.andortinu0123'\"")), max_size=20
    ).map(lambda rest: f + rest)
)


@FUZZ
@given(rule_text)
def test_rule_parser(expr: str) -> None:
    with contextlib.suppress(RuleError):  # a compile error with line and column: documented
        run(expr)
