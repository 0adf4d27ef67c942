"""The v1 wire format: request schemas, JSON/msgpack codecs, and the error body.

`WireError` is a request that does not decode or validate, with its status and code;
which status a core error answers is decided in serving/errors.py.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple

import msgpack
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from actors.slots import MAX_SHARDS
from decisioning.profile.slots import SLOTS

__all__ = [
    "DEFAULT",
    "IDEMPOTENCY_KEY",
    "DecideIn",
    "EventIn",
    "Limits",
    "ModelDeployIn",
    "OutcomeIn",
    "PromoteIn",
    "ScaleIn",
    "SlotMoveIn",
    "SplitIn",
    "WireError",
    "WireModels",
    "decode_body",
    "encode_body",
    "error_body",
    "validate",
]

JSON = "application/json"
MSGPACK = "application/msgpack"
_MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
MAX_TS = 4102444800.0  # 2100-01-01
IDEMPOTENCY_KEY = "Idempotency-Key"  # the header a decide's request id may come in


class WireError(Exception):
    """A request that cannot be decoded or validated; carries status and error code."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def _timestamp(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("a timestamp is unix seconds or an RFC 3339 string")
    if isinstance(v, int | float):
        ts = float(v)
    elif isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an RFC 3339 timestamp") from None
        if dt.tzinfo is None:
            raise ValueError("an RFC 3339 timestamp needs a time zone (e.g. Z)")
        ts = dt.timestamp()
    else:
        raise ValueError("a timestamp is unix seconds or an RFC 3339 string")
    if not (math.isfinite(ts) and 0 < ts < MAX_TS):
        raise ValueError("timestamp out of range")
    return ts


Timestamp = Annotated[
    float,
    BeforeValidator(_timestamp),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": MAX_TS},
                {"type": "string", "format": "date-time"},
            ]
        }
    ),
]
_BAD_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def _clean_id(v: Any) -> Any:
    """Ids are compared as Unicode NFC ("é" typed two ways is one customer) and may hold no
    control, format, surrogate or unassigned character. One Python call per id: ASCII
    printable ids (nearly all) pass at C speed."""
    if not isinstance(v, str) or (v.isascii() and v.isprintable()):
        return v  # a non-string fails the str check that follows
    v = unicodedata.normalize("NFC", v)
    for ch in v:
        if unicodedata.category(ch) in _BAD_CATEGORIES:
            raise ValueError(
                f"control, format or unassigned character U+{ord(ch):04X} is not allowed in an id"
            )
    return v


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class Limits(NamedTuple):
    """The input limits the wire models enforce (server.max_* in the config)."""

    max_id_length: int = 128
    max_string_length: int = 256
    max_properties: int = 64
    max_abs_number: float = 1e15


class WireModels:
    """The request models for a set of limits (the config's; the defaults at import, for
    tests and the OpenAPI document of an app not yet configured). `channels`, when given,
    are the ones a decision may name: the document lists them (the ingress, not the
    model, refuses others, with `unknown_channel`)."""

    # (over 60 lines: the request models themselves, declared in one place so that each
    # is built from the same limits)
    def __init__(self, limits: Limits, channels: tuple[str, ...] = ()) -> None:
        self.limits = limits
        known: dict[str, Any] | None = {"enum": list(channels)} if channels else None
        n = limits.max_abs_number
        Id = Annotated[
            str,
            BeforeValidator(_clean_id),
            Field(min_length=1, max_length=limits.max_id_length, pattern=r"^[^\x00-\x1f\x7f]+$"),
        ]
        Scalar = (
            Annotated[StrictStr, Field(max_length=limits.max_string_length)]
            | Annotated[StrictInt, Field(ge=-n, le=n)]
            | Annotated[StrictFloat, Field(ge=-n, le=n)]
            | StrictBool
            | None
        )
        Properties = Annotated[
            dict[Annotated[str, Field(min_length=1, max_length=128)], Scalar],
            Field(max_length=limits.max_properties),
        ]

        class EventBody(_Wire):
            """An event that causes a decision (its customer is the decision's)."""

            event_id: Id | None = Field(None, description="Client id of the event (idempotency).")
            type: Annotated[str, Field(min_length=1, max_length=64)] = Field(
                description="Event type."
            )
            ts: Timestamp | None = Field(None, description="Unix seconds or RFC 3339; default now.")
            properties: Properties = Field(default_factory=dict, description="Scalar properties.")

        class EventIn(EventBody):
            """A customer event: POST /v1/events takes one or a list."""

            customer_id: Id = Field(description="Customer id.")

        class DecideIn(_Wire):
            """POST /v1/decide."""

            customer_id: Id = Field(description="Customer id; unknown customers get a cold start.")
            channel: Annotated[str, Field(min_length=1, max_length=64)] = Field(
                description='Channel, or "outbound": the catalog chooses the channel '
                "(decisioning.outbound) and at most one action.",
                json_schema_extra=known,
            )
            placement: Annotated[str, Field(max_length=128)] | None = Field(
                None, description="Slot."
            )
            context: Properties = Field(default_factory=dict, description="Request context.")
            limit: Annotated[int, Field(ge=1, le=100)] | None = Field(None, description="How many.")
            explain: bool = Field(False, description="Return why each candidate won or lost.")
            dry_run: bool = Field(False, description="Decide without recording anything.")
            event: EventBody | None = Field(None, description="Event to apply before deciding.")
            request_id: Id | None = Field(
                None,
                description="Client id of this request (idempotency; or the Idempotency-Key "
                "header): a retry gets the decision recorded under it, the same body, "
                "instead of a second decision. Another channel or placement under the same "
                "id: 409 request_id_reused. Ignored in a dry run.",
            )

        class RequestIdIn(_Wire):
            """A request id on its own (the Idempotency-Key header), checked as in a body."""

            request_id: Id

        class DecideBatchIn(_Wire):
            """POST /v1/decide/batch: each request is a POST /v1/decide body, decided on
            its own (one refused does not fail the others)."""

            # (any item is taken: one that is no DecideIn is answered its 422 in its place
            # of the results, not refused with the batch; the document says so)
            requests: Annotated[list[DecideIn | Any], Field(min_length=1)] = Field(
                description="The decide requests (at most server.max_batch), each a POST "
                "/v1/decide body (DecideIn), answered in this order; one that is not gets "
                "its error in its place of the results."
            )

        class OutcomeIn(_Wire):
            """POST /v1/outcomes takes one or a list."""

            decision_id: Annotated[str, Field(min_length=1, max_length=64)] = Field(
                description="Id."
            )
            action_id: Annotated[str, Field(min_length=1, max_length=64)] = Field(
                description="Action."
            )
            outcome: Literal["impression", "click", "accept", "reject", "convert"] = Field(
                description="What the customer did."
            )
            ts: Timestamp | None = Field(None, description="Unix seconds or RFC 3339; default now.")

        class OutboundAckIn(_Wire):
            """POST /v1/outbound/ack: messages delivered (their ids)."""

            ids: Annotated[
                list[Annotated[str, Field(min_length=1, max_length=64)]],
                Field(min_length=1, max_length=1000),
            ] = Field(description="Ids of delivered messages (the decision ids).")

        class MergeIn(_Wire):
            """POST /v1/identities/merge: two profiles that are one person."""

            survivor: Id = Field(description="The customer (or identifier) that stays.")
            merged: Id = Field(description="The customer (or identifier) folded into it.")

        self.MergeIn = MergeIn
        self.EventBody, self.EventIn = EventBody, EventIn
        self.DecideIn, self.OutcomeIn = DecideIn, OutcomeIn
        self.RequestIdIn = RequestIdIn
        self.DecideBatchIn = DecideBatchIn
        self.OutboundAckIn = OutboundAckIn

    def request_id(self, body: str | None, headers: Mapping[str, str]) -> str | None:
        """A decide's request id: the body's `request_id`, or the Idempotency-Key header
        checked by the same rules (422 `invalid_field`, field `Idempotency-Key`); both
        given must be the same id (else 422 `request_id_mismatch`)."""
        header = headers.get(IDEMPOTENCY_KEY.lower())  # (HTTP header names: any case)
        if header is None:
            return body
        try:
            checked: str = validate(self.RequestIdIn, {"request_id": header}).request_id
        except WireError as e:
            why = e.message.removeprefix("request_id: ")
            raise WireError(422, e.code, f"{IDEMPOTENCY_KEY}: {why}", IDEMPOTENCY_KEY) from None
        if body is not None and body != checked:
            raise WireError(
                422,
                "request_id_mismatch",
                f"the {IDEMPOTENCY_KEY} header and the body's request_id differ: send one, "
                "or the same id in both",
                "request_id",
            )
        return checked


DEFAULT = WireModels(Limits())
EventBody, EventIn = DEFAULT.EventBody, DEFAULT.EventIn
DecideIn, OutcomeIn = DEFAULT.DecideIn, DEFAULT.OutcomeIn


class ModelDeployIn(_Wire):
    """POST /v1/models/deploy: a model version (manifest + LightGBM text)."""

    manifest: dict[str, Any] = Field(description="The model's manifest.json.")
    model_text: str = Field(description="The LightGBM text model.")


class PromoteIn(_Wire):
    """POST /v1/models/{name}/promote: the version to make champion (default: the
    challenger)."""

    version: int | None = Field(None, ge=1, description="A version in the registry.")


class ScaleIn(_Wire):
    """POST /v1/shards/scale: the number of shards to run; slots move to balance."""

    shards: int = Field(ge=1, le=MAX_SHARDS, description=f"Shards to run (1..{MAX_SHARDS}).")


class SlotMoveIn(_Wire):
    """POST /v1/shards/move: move slots [first, last] (inclusive) to shard `to`."""

    first: int = Field(ge=0, lt=SLOTS, description="The first slot to move.")
    last: int = Field(ge=0, lt=SLOTS, description="The last slot to move (inclusive).")
    to: int = Field(ge=0, lt=SLOTS, description="The shard that will own them.")

    @model_validator(mode="after")
    def _ordered(self) -> SlotMoveIn:
        if self.last < self.first:
            raise ValueError("last must not be before first")
        return self


class SplitIn(_Wire):
    """POST /v1/models/{name}/split: a challenger for a share of customers (sticky by
    customer), or in shadow; version null ends the test."""

    version: int | None = Field(None, ge=1, description="The challenger; null: no challenger.")
    share: float = Field(0.1, ge=0, le=1, description="Share of customers it decides for.")
    shadow: bool = Field(False, description="Scored and logged for everyone, never used.")


def _reject_constant(token: str) -> float:
    raise ValueError(f"{token} is not allowed in JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _check_depth(value: Any, max_depth: int) -> None:
    if isinstance(value, dict | list) and not _nested_within(value, max_depth - 1):
        raise WireError(
            400, "too_deep", f"the body nests arrays and objects deeper than {max_depth}"
        )


def _nested_within(container: dict[Any, Any] | list[Any], levels: int) -> bool:
    """Whether no array or object inside `container` is more than `levels` deeper (the
    recursion is bounded by max_depth; scalars, nearly every value, cost a type check)."""
    for x in container.values() if type(container) is dict else container:
        t = type(x)
        if (t is dict or t is list) and (levels == 0 or not _nested_within(x, levels - 1)):
            return False
    return True


def decode_body(body: bytes, content_type: str | None, max_bytes: int, max_depth: int = 8) -> Any:
    """Bytes -> Python value by Content-Type (JSON when absent); strict about both."""
    value = _decode(body, content_type, max_bytes)
    _check_depth(value, max_depth)
    return value


def _decode(body: bytes, content_type: str | None, max_bytes: int) -> Any:
    if len(body) > max_bytes:
        raise WireError(413, "body_too_large", f"body is larger than {max_bytes} bytes")
    if not body:
        raise WireError(400, "empty_body", "the request has no body")
    ctype = (content_type or JSON).split(";")[0].strip().lower()
    if ctype in _MSGPACK_TYPES:
        try:
            return msgpack.unpackb(
                body,
                raw=False,
                strict_map_key=True,
                ext_hook=_no_ext,
                max_str_len=max_bytes,
                max_bin_len=0,  # no binary values anywhere in the API
                max_ext_len=0,
                max_array_len=max_bytes,
                max_map_len=max_bytes // 2,
            )
        except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData) as e:
            raise WireError(400, "invalid_msgpack", f"body is not valid msgpack: {e}") from None
    if ctype == JSON or ctype.endswith("+json"):
        try:
            return json.loads(
                body, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates
            )
        except (ValueError, RecursionError) as e:
            raise WireError(400, "invalid_json", f"body is not valid JSON: {e}") from None
    raise WireError(
        415, "unsupported_media_type", f"Content-Type {ctype!r}: use {JSON} or {MSGPACK}"
    )


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError("msgpack ext types are not accepted")


def encode_body(value: Any, accept: str | None) -> tuple[bytes, str]:
    """Python value -> (bytes, media type), msgpack when the client accepts it."""
    if accept and "msgpack" in accept:
        return msgpack.packb(value, use_bin_type=True), MSGPACK
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode(), JSON


def validate(model: type[BaseModel], data: Any, prefix: str = "") -> Any:
    """Validate decoded data against a wire model; the first problem becomes a WireError."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        field = prefix + where if where else prefix.removesuffix(".")  # (the item itself)
        kind = err["type"]
        if kind == "missing":
            code, msg = "missing_field", "field required"
        elif kind == "extra_forbidden":
            code, msg = "unknown_field", "unknown field"
        else:
            code, msg = "invalid_field", err["msg"].removeprefix("Value error, ")
        raise WireError(422, code, f"{field or 'body'}: {msg}", field or None) from None


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    return {"error": err}
