from __future__ import annotations

import json
import math

import jsonschema
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.wire import (
    MAX_TS,
    DecideIn,
    EventIn,
    WireError,
    decode_body,
    encode_body,
    validate,
)

MAX = 10_000


def err(body: bytes, ctype: str | None = "application/json") -> WireError:
    with pytest.raises(WireError) as e:
        decode_body(body, ctype, MAX)
    return e.value


@pytest.mark.parametrize(
    "body, code",
    [
        (b"{", "invalid_json"),
        (b'{"a": NaN}', "invalid_json"),
        (b'{"a": Infinity}', "invalid_json"),
        (b'{"a": 1, "a": 2}', "invalid_json"),
        (b"", "empty_body"),
        (b"x" * (MAX + 1), "body_too_large"),
    ],
)
def test_bad_json(body: bytes, code: str) -> None:
    assert err(body).code == code


def test_a_body_of_exactly_max_bytes_is_read() -> None:
    body = b'{"a": 1}'
    body += b" " * (MAX - len(body))
    assert len(body) == MAX and decode_body(body, "application/json", MAX) == {"a": 1}


def test_bad_msgpack_and_media_types() -> None:
    assert err(b"\xc1", "application/msgpack").code == "invalid_msgpack"
    ext = msgpack.packb(msgpack.ExtType(1, b"x"))
    assert err(ext, "application/msgpack").code == "invalid_msgpack"
    assert err(b"{}", "text/plain").status == 415


def test_validation_codes() -> None:
    ok = {"customer_id": "c", "type": "page_view"}
    assert validate(EventIn, ok).ts is None
    cases = [
        ({"type": "x"}, "missing_field", "customer_id"),
        ({**ok, "colour": 1}, "unknown_field", "colour"),
        ({**ok, "ts": "yesterday"}, "invalid_field", "ts"),
        ({**ok, "ts": "2026-01-01T00:00:00"}, "invalid_field", "ts"),  # no time zone
        ({**ok, "ts": math.nan}, "invalid_field", "ts"),
        ({**ok, "properties": {"a": {"nested": 1}}}, "invalid_field", "properties.a.str"),
        ({**ok, "properties": {"a": math.inf}}, "invalid_field", None),
        ({**ok, "customer_id": 42}, "invalid_field", "customer_id"),
        ({**ok, "customer_id": "a\nb"}, "invalid_field", "customer_id"),
    ]
    for data, code, field in cases:
        with pytest.raises(WireError) as e:
            validate(EventIn, data)
        assert e.value.code == code, data
        assert e.value.status == 422
        if field:
            assert (e.value.field or "").startswith(field.split(".")[0]), (data, e.value.field)
    with pytest.raises(WireError):
        validate(DecideIn, {"customer_id": "c", "channel": "web", "limit": "3"})
    assert validate(EventIn, {**ok, "ts": "2026-01-01T00:00:00Z"}).ts == 1767225600.0


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(values)
def test_codecs_round_trip(value: object) -> None:
    for accept, ctype in (
        ("application/json", "application/json"),
        ("application/msgpack", "application/msgpack"),
    ):
        body, media = encode_body(value, accept)
        assert media == ctype
        assert decode_body(body, ctype, 10**6) == value


def test_json_encoder_refuses_nan() -> None:
    with pytest.raises(ValueError):
        encode_body({"x": math.nan}, "application/json")
    assert json.loads(encode_body({"x": 1}, None)[0]) == {"x": 1}


def _code(model: type, data: dict) -> str:
    try:
        validate(model, data)
    except WireError as e:
        return e.code + ":" + (e.field or "")
    return "ok"


def test_every_input_limit_at_and_just_over() -> None:
    from serving.wire import Limits, WireModels

    lim = Limits(max_id_length=16, max_string_length=10, max_properties=3, max_abs_number=100.0)
    w = WireModels(lim)
    ev = {"customer_id": "c", "type": "page_view"}
    assert _code(w.EventIn, {**ev, "customer_id": "x" * 16}) == "ok"
    assert _code(w.EventIn, {**ev, "customer_id": "x" * 17}) == "invalid_field:customer_id"
    assert _code(w.EventIn, {**ev, "event_id": "x" * 17}) == "invalid_field:event_id"
    assert _code(w.EventIn, {**ev, "properties": {"p": "y" * 10}}) == "ok"
    assert _code(w.EventIn, {**ev, "properties": {"p": "y" * 11}}).startswith("invalid_field:")
    three = {f"k{i}": i for i in range(3)}
    assert _code(w.EventIn, {**ev, "properties": three}) == "ok"
    assert _code(w.EventIn, {**ev, "properties": {**three, "k3": 1}}) == "invalid_field:properties"
    for n in (100, -100, 100.0, -100.0):
        assert _code(w.EventIn, {**ev, "properties": {"p": n}}) == "ok"
    for n in (101, -101, 100.001, -100.001):
        assert _code(w.EventIn, {**ev, "properties": {"p": n}}).startswith("invalid_field:")
    ctx = {"customer_id": "c", "channel": "web", "context": {**three, "k3": 1}}
    assert _code(w.DecideIn, ctx) == "invalid_field:context"
    # the defaults, as the config documents them
    assert DecideIn.model_fields["customer_id"].metadata  # carries max_length 128
    assert _code(EventIn, {**ev, "customer_id": "x" * 128}) == "ok"
    assert _code(EventIn, {**ev, "customer_id": "x" * 129}) == "invalid_field:customer_id"


def test_ids_are_nfc_and_printable() -> None:
    ev = {"type": "page_view"}
    composed = validate(EventIn, {**ev, "customer_id": "jos\u00e9"}).customer_id
    decomposed = validate(EventIn, {**ev, "customer_id": "jose\u0301"}).customer_id
    assert composed == decomposed == "jos\u00e9"  # one customer, however it was typed
    for bad in ("a\u200bb", "a\u202eb", "a\u2028b", "a\x00b", "a\x7fb", "a\ufeffb"):
        assert _code(EventIn, {**ev, "customer_id": bad}) == "invalid_field:customer_id", bad


def test_nesting_depth_and_msgpack_limits() -> None:
    def nested(depth: int) -> bytes:
        return ("[" * depth + "]" * depth).encode()

    assert decode_body(nested(8), "application/json", MAX, max_depth=8) is not None
    with pytest.raises(WireError) as e:
        decode_body(nested(9), "application/json", MAX, max_depth=8)
    assert e.value.code == "too_deep" and e.value.status == 400
    deep = msgpack.packb(json.loads(nested(9)))
    with pytest.raises(WireError) as e:
        decode_body(deep, "application/msgpack", MAX, max_depth=8)
    assert e.value.code == "too_deep"
    assert err(msgpack.packb({"a": b"bytes"}), "application/msgpack").code == "invalid_msgpack"


_TS_DOC = jsonschema.Draft202012Validator(
    {"type": "object", "properties": {"ts": EventIn.model_json_schema()["properties"]["ts"]}}
)


@given(
    st.one_of(
        st.floats(allow_nan=False),
        st.integers(min_value=-(2**40), max_value=2**40),
        st.booleans(),
        st.none(),
        st.sampled_from([0, 0.0, 1e-9, MAX_TS, MAX_TS - 1e-3, -1.0]),
    )
)
def test_the_documented_timestamp_is_the_one_validated(ts: object) -> None:
    """What the document says a numeric `ts` may be is exactly what is accepted (so a
    fuzzer's invalid timestamps are refused, and its valid ones get through)."""
    accepted = _code(EventIn, {"customer_id": "c", "type": "t", "ts": ts}) == "ok"
    assert accepted == _TS_DOC.is_valid({"ts": ts}), ts


def test_rfc3339_timestamps_are_documented_and_accepted() -> None:
    event = {"customer_id": "c", "type": "t", "ts": "2024-05-01T12:00:00Z"}
    assert _code(EventIn, event) == "ok" and _TS_DOC.is_valid({"ts": event["ts"]})


def test_the_configured_channels_are_listed_in_the_document_only() -> None:
    from serving.wire import Limits, WireModels

    listed = WireModels(Limits(), ("web", "outbound")).DecideIn
    assert listed.model_json_schema()["properties"]["channel"]["enum"] == ["web", "outbound"]
    assert "enum" not in DecideIn.model_json_schema()["properties"]["channel"]
    assert _code(listed, {"customer_id": "c", "channel": "fax"}) == "ok"  # the ingress refuses


def test_a_request_id_is_checked_like_an_event_id_in_the_body_or_the_header() -> None:
    from serving.wire import Limits, WireModels

    w = WireModels(Limits(max_id_length=16))
    decide = {"customer_id": "c", "channel": "web"}
    assert _code(w.DecideIn, {**decide, "request_id": "r" * 16}) == "ok"
    for bad in ("r" * 17, "", 7, ["r"], "a\u200bb"):  # too long, empty, wrong type, format
        assert _code(w.DecideIn, {**decide, "request_id": bad}) == "invalid_field:request_id"
    assert w.request_id(None, {}) is None
    assert w.request_id("r-1", {}) == "r-1"
    assert w.request_id(None, {"idempotency-key": "r-1"}) == "r-1"
    assert w.request_id("jos\u00e9", {"idempotency-key": "jose\u0301"}) == "jos\u00e9"  # (NFC)
    for header in ("r" * 17, "", "a\u200bb"):
        with pytest.raises(WireError) as e:
            w.request_id(None, {"idempotency-key": header})
        assert (e.value.status, e.value.code, e.value.field) == (
            422,
            "invalid_field",
            "Idempotency-Key",
        )
        assert e.value.message.startswith("Idempotency-Key: "), e.value.message
    with pytest.raises(WireError) as e:
        w.request_id("r-1", {"idempotency-key": "r-2"})
    assert (e.value.status, e.value.code, e.value.field) == (
        422,
        "request_id_mismatch",
        "request_id",
    )
