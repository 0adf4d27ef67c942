"""The field types every config section shares: durations, identifiers, the strict base.

A duration is written as '90s', '15m', '24h', '7d' or a number of seconds; an identifier
is a lower-case name usable as a feature name; every section forbids unknown fields and
is frozen once loaded.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = ["Duration", "Ident", "Scalar", "StrictModel", "json_object", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_IDENT = r"^[a-z][a-z0-9_]{0,62}$"


def parse_duration(value: object) -> float:
    """'90s', '15m', '24h', '7d', '2w' or a number of seconds -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '24h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration (examples: '90s', '15m', '24h', '7d')")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def json_object(value: object) -> object:
    """A mapping given as JSON text (environment overrides) is parsed; the rest as is."""
    return json.loads(value) if isinstance(value, str) else value


Ident = Annotated[str, Field(pattern=_IDENT)]
Scalar = str | int | float | bool


class StrictModel(BaseModel):
    """A config section: unknown fields are an error, and it never changes once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
