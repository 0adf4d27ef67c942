"""One mapping from a core error to HTTP (serving/errors.py): every class of the error
tree has its answer, the caller's mistakes are 4xx wherever they surface, what passes is
a 503 with Retry-After, and an error that crossed the actor boundary (pickled, as the
error value itself) maps as it did where it was raised."""

from __future__ import annotations

import importlib
import pickle
import pkgutil

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

import decisioning
import decisioning.errors as tree
from actors.calls import error_answer as _error
from actors.remote import ShardUnavailable
from decisioning.delivery.links import LinkError
from decisioning.errors import (
    AlreadyMerged,
    Backlogged,
    ConfigError,
    InvalidInput,
    MergeBusy,
    ModelError,
    ModelIncompatible,
    ModelIntegrityError,
    Moved,
    MoveInProgress,
    NextbestError,
    NotFound,
    RequestIdReused,
    RuleError,
    SlotFrozen,
    SlotMoved,
    UnknownShard,
)
from decisioning.journal.fencing import Fenced
from decisioning.journal.snapshot import SnapshotError
from decisioning.journal.wal import StorageFailed
from decisioning.policy.catalog import CatalogError
from decisioning.stores.slotmap import SlotMapError
from serving.errors import error_of, http_error, is_error, moved_of, raise_for
from serving.responses import install_error_handlers
from serving.wire import WireError
from tests.conftest import examples
from training.train import TrainingError

# what each class answers by default; a class added to the tree must be added here
EXPECTED: dict[type[BaseException], int] = {
    NextbestError: 422,
    ConfigError: 422,
    RuleError: 422,
    CatalogError: 422,
    InvalidInput: 422,
    NotFound: 404,
    LinkError: 404,
    AlreadyMerged: 409,
    RequestIdReused: 409,
    ModelError: 422,
    ModelIntegrityError: 422,
    ModelIncompatible: 422,
    TrainingError: 422,
    Backlogged: 503,
    MergeBusy: 503,
    Moved: 503,
    SlotMoved: 503,
    SlotFrozen: 503,
    Fenced: 503,
    StorageFailed: 503,
    SnapshotError: 500,
    SlotMapError: 422,  # never answered: it stops the supervisor's start
    MoveInProgress: 409,
    UnknownShard: 422,
}
TEMPORARY = (Backlogged, MergeBusy, Moved, SlotMoved, SlotFrozen, Fenced, StorageFailed)
NOT_THE_CALLERS = (*TEMPORARY, SnapshotError)
OUTSIDE = (Fenced, StorageFailed)  # drawn beside the tree, on purpose


def _classes() -> set[type[BaseException]]:
    """Every error class nextbest defines: the tree under NextbestError, after importing
    every module of the core (and training's), and the two drawn beside it."""
    for m in pkgutil.walk_packages(decisioning.__path__, "decisioning."):
        importlib.import_module(m.name)
    found: set[type[BaseException]] = set()
    todo: list[type[BaseException]] = [NextbestError, *OUTSIDE]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return {c for c in found if c.__module__.split(".")[0] in ("decisioning", "training")}


def _instance(cls: type[BaseException], code: str | None = None) -> BaseException:
    """An error of `cls` as a shard would raise it (built as unpickling does)."""
    err = cls.__new__(cls)
    Exception.__init__(err, f"a {cls.__name__}")
    err.message = f"a {cls.__name__}"  # type: ignore[attr-defined]
    err.field = "x"  # type: ignore[attr-defined]
    if issubclass(cls, Moved | AlreadyMerged):
        err.customer, err.target = "a", "b"  # type: ignore[attr-defined]
        err.moved = {"a": "b"}  # type: ignore[attr-defined]
    if code is not None:
        err.code = code  # type: ignore[attr-defined]
    return err


def _crossed(err: BaseException) -> object:
    """`err` as a shard answers it (actors/calls.py) and Ray carries it: pickled."""
    answer = err if isinstance(err, Fenced) else _error(err)  # type: ignore[arg-type]
    return pickle.loads(pickle.dumps(answer))


def test_every_error_class_is_drawn_in_the_tree_and_has_its_answer() -> None:
    classes = _classes()
    assert classes == set(EXPECTED), "a new error class: decide its HTTP answer here"
    drawing = tree.__doc__ or ""
    for cls in classes:
        assert cls.__name__ in drawing, f"{cls.__name__} is not drawn in decisioning/errors.py"
        wire = http_error(_instance(cls))
        assert wire.status == EXPECTED[cls], cls
        assert wire.code and wire.message, cls


# (a shard whose log failed exits: StorageFailed is never sent as an answer)
@pytest.mark.parametrize("cls", sorted(set(EXPECTED) - {StorageFailed}, key=lambda c: c.__name__))
def test_an_error_that_crossed_as_data_maps_as_the_error_itself(
    cls: type[BaseException],
) -> None:
    err = _instance(cls, None if cls is Fenced else "its_code")
    back = error_of(_crossed(err))
    assert type(back) is cls
    a, b = http_error(err), http_error(back)  # type: ignore[arg-type]
    assert (a.status, a.code, a.message, a.field) == (b.status, b.code, b.message, b.field)


@given(
    cls=st.sampled_from(sorted(EXPECTED, key=lambda c: c.__name__)),
    code=st.none() | st.text(min_size=1, max_size=12),
    refusal=st.sampled_from([409, 422]),
    route_code=st.none() | st.sampled_from(["model_refused", "invalid_catalog"]),
)
@examples(200)
def test_the_callers_mistakes_are_never_a_5xx_on_any_route(
    cls: type[BaseException], code: str | None, refusal: int, route_code: str | None
) -> None:
    wire = http_error(_instance(cls, code), refusal=refusal, code=route_code)
    if issubclass(cls, TEMPORARY):
        assert wire.status == 503 and wire.field is None
    elif issubclass(cls, SnapshotError):
        assert (wire.status, wire.code) == (500, "internal_error")
        assert "SnapshotError" not in wire.message  # nothing of the server's state leaks
    else:
        assert 400 <= wire.status < 500, (cls, code, wire.status)
    assert wire.code


def test_a_code_refines_its_class() -> None:
    expired = LinkError("too late", code="link_expired", field="token")
    assert (http_error(expired).status, http_error(expired).code) == (410, "link_expired")
    assert http_error(LinkError("not ours")).status == 404
    # nothing to roll back to: the state is at fault, whatever the route's refusals say
    none_left = NotFound("there is no earlier catalog", code="no_previous")
    answer = http_error(none_left, code="invalid_catalog")
    assert (answer.status, answer.code) == (409, "no_previous")


def test_a_route_says_what_its_refusals_are() -> None:
    tampered = ModelIntegrityError("sha256 does not match")
    assert http_error(tampered).status == 422  # a body carrying it: unprocessable
    rollout = http_error(tampered, refusal=409)  # a stored version: a conflict
    assert (rollout.status, rollout.code) == (409, "model_refused")
    bad = CatalogError.__new__(CatalogError)
    Exception.__init__(bad, "line 1, column 3: syntax error")
    catalog = http_error(bad, code="invalid_catalog")
    assert (catalog.status, catalog.code) == (422, "invalid_catalog")
    unknown = http_error(NotFound("no model named 'x'", code="unknown_model"), refusal=409)
    assert (unknown.status, unknown.code) == (404, "unknown_model")  # not found stays so
    item = http_error(InvalidInput("bad ts", field="ts"), prefix="[2].")
    assert (item.status, item.field) == (422, "[2].ts")


def test_answers_are_read_as_errors_or_values() -> None:
    moved = _error(Moved("a", "b", {"a": "b", "c": "d"}))
    assert is_error(moved, "moved") and moved_of(moved) == {"a": "b", "c": "d"}
    assert moved_of(_error(Moved("a", "b"))) == {"a": "b"}
    assert moved_of(_error(NotFound("x"))) is None
    for value in (3, None, {"accepted": 1}, {"error": "a string"}, [], {"error": {}, "x": 1}):
        assert error_of(value) is None and not is_error(value)
    with pytest.raises(ShardUnavailable) as busy:
        raise_for(_error(MergeBusy("wait")))
    assert busy.value.code == "merge_in_progress"
    with pytest.raises(WireError) as gone:
        raise_for(_error(NotFound("gone", code="unknown_decision", field="decision_id")))
    assert (gone.value.status, gone.value.code, gone.value.field) == (
        404,
        "unknown_decision",
        "decision_id",
    )
    raise_for({"accepted": 1})  # a value: nothing raised


def test_the_app_answers_what_the_mapping_says() -> None:
    app = FastAPI()
    install_error_handlers(app)
    raised: dict[str, BaseException] = {
        "/busy": ShardUnavailable("restarting"),
        "/fenced": http_error(Fenced("a newer one")),
        "/missing": NotFound("no such decision", code="unknown_decision", field="decision_id"),
        "/bug": ZeroDivisionError("x"),
    }

    def raising(err: BaseException) -> object:
        def route() -> None:
            raise err

        return route

    for path, err in raised.items():
        app.add_api_route(path, raising(err))
    with TestClient(app, raise_server_exceptions=False) as c:
        for path in ("/busy", "/fenced"):
            r = c.get(path)
            assert r.status_code == 503 and r.headers["retry-after"] == "1", path
            assert r.json()["error"]["code"] == "shard_unavailable"
        r = c.get("/missing")
        assert r.status_code == 404
        assert r.json() == {
            "error": {
                "code": "unknown_decision",
                "message": "no such decision",
                "field": "decision_id",
            }
        }
        r = c.get("/bug")
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
