"""Each error answer becomes its typed error with the server's code, message and field,
in JSON and in msgpack, and only the temporary ones are retried."""

from __future__ import annotations

import pickle

import pytest

from nextbest_client import (
    BadRequest,
    Client,
    Conflict,
    NextbestError,
    NotFound,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from nextbest_client.errors import error_of
from tests.unit.nextbest_client.scripted import error, scripted

CASES = [
    (400, "invalid_json", BadRequest),
    (413, "batch_too_large", BadRequest),
    (415, "unsupported_media_type", BadRequest),
    (422, "unknown_field", BadRequest),
    (401, "unauthenticated", Unauthorized),
    (403, "forbidden", Unauthorized),
    (404, "unknown_decision", NotFound),
    (409, "move_in_progress", Conflict),
    (410, "link_expired", NextbestError),
    (500, "internal", NextbestError),
]


@pytest.mark.parametrize(("status", "code", "kind"), CASES)
def test_each_status_is_its_error_class(status: int, code: str, kind: type) -> None:
    err = error_of(status, {"error": {"code": code, "message": "m", "field": "a.b"}})
    assert type(err) is kind
    assert (err.status, err.code, err.message, err.field) == (status, code, "m", "a.b")
    assert not isinstance(err, Unavailable)


def test_503_and_429_are_unavailable_with_their_retry_after() -> None:
    for status in (503, 429):
        err = error_of(status, {"error": {"code": "overloaded", "message": "m"}}, 1.5)
        assert isinstance(err, Unavailable) and err.retry_after == 1.5 and err.field is None
    assert issubclass(Unreachable, Unavailable) and Unreachable("x").status == 0


def test_an_answer_without_the_error_object_still_maps() -> None:
    err = error_of(503, "Service Unavailable", None)  # Serve's own shedding, a proxy's page
    assert isinstance(err, Unavailable) and err.code == "http_503"
    assert "Service Unavailable" in err.message
    assert type(error_of(404, None)) is NotFound


def test_errors_pickle_with_their_attributes() -> None:
    for err in (error_of(422, {"error": {"code": "c", "message": "m", "field": "f"}}),
                error_of(503, {"error": {"code": "c", "message": "m"}}, 2.0),
                Unreachable("gone")):  # fmt: skip
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and vars(back) == vars(err)


@pytest.mark.parametrize("use_msgpack", [True, False])
@pytest.mark.parametrize(("status", "code", "kind"), CASES)
def test_a_real_error_answer_raises_its_error_at_once(
    status: int, code: str, kind: type, use_msgpack: bool
) -> None:
    with scripted() as [srv]:
        srv.default("/v1/decide", error(status, code, "customer_id"))
        with Client(srv.url, "k", routing=False, msgpack=use_msgpack, deadline=5) as nb:
            with pytest.raises(NextbestError) as info:
                nb.decide("c-1", "web")
            assert nb.stats.retries == 0
        assert type(info.value) is kind
        assert (info.value.status, info.value.code, info.value.field) == (
            status, code, "customer_id",
        )  # fmt: skip
        assert len(srv.requests("/v1/decide")) == 1  # never retried
        media = "application/msgpack" if use_msgpack else "application/json"
        got = srv.requests("/v1/decide")[0]
        assert got.headers["content-type"] == media and got.headers["accept"] == media
        assert got.headers["authorization"] == "Bearer k"
