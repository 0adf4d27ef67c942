from __future__ import annotations

import pickle

from decisioning.errors import ConfigError, InvalidInput, ModelIncompatible, NotFound, RuleError


def test_errors_survive_pickling_across_processes() -> None:
    errors = [
        InvalidInput("bad", field="limit", code="invalid_field"),
        NotFound("gone", field="decision_id", code="unknown_decision"),
        ModelIncompatible("m@1", ["shoe_size"]),
        RuleError("x >", "syntax error", 1, 3),
        ConfigError("a.yaml", [("server.port", "too big")]),
    ]
    for e in errors:
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e)
        assert str(back) == str(e)
        assert back.__dict__ == e.__dict__
