"""Load the config file once, at the edge: YAML + NEXTBEST_* overrides -> typed Config.

Every problem is reported with the file, the field and what is wrong; rules in the
catalog are compiled here too, so a bad expression fails at load, not at the first
decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from decisioning.config import AuthSpec, Config, DeliverySpec, LogsSpec, ServerSpec
from decisioning.errors import ConfigError
from decisioning.policy.catalog import Catalog, CatalogError
from decisioning.profile import ProfileSchema

__all__ = ["ENV_PREFIX", "config_from_dict", "load_config"]

ENV_PREFIX = "NEXTBEST_"


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from `environ` (NEXTBEST_<SERVER FIELD>, NEXTBEST_AUTH_<FIELD>,
    NEXTBEST_LOGS_<FIELD>, NEXTBEST_DELIVERY_<FIELD>),
    validate and compile."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(source, [("(file)", e.strerror or str(e))]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(source, [("(yaml)", str(e).replace("\n", " "))]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, [("(top level)", "the file must hold a mapping")])
    return config_from_dict(data, source, environ or {})


def config_from_dict(
    data: dict[str, Any], source: str = "<config>", environ: Mapping[str, str] | None = None
) -> Config:
    data = dict(data)
    for section, spec, prefix in (
        ("server", ServerSpec, ENV_PREFIX),
        ("auth", AuthSpec, ENV_PREFIX + "AUTH_"),
        ("logs", LogsSpec, ENV_PREFIX + "LOGS_"),
        ("delivery", DeliverySpec, ENV_PREFIX + "DELIVERY_"),
    ):
        overrides = _env_overrides(environ or {}, spec, prefix)
        if overrides:
            data[section] = {**(data.get(section) or {}), **overrides}
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, _problems(e)) from None
    try:
        Catalog(config, ProfileSchema(config))
    except CatalogError as e:
        raise ConfigError(source, e.problems()) from None
    except ValueError as e:
        raise ConfigError(source, [("profile", str(e))]) from None
    return config


def _env_overrides(environ: Mapping[str, str], spec: type, prefix: str) -> dict[str, str]:
    out = {}
    for name in spec.model_fields:  # type: ignore[attr-defined]
        key = prefix + name.upper()
        if key in environ:
            out[name] = environ[key]
    return out


def _problems(e: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in e.errors():
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        problems.append((loc or "(top level)", msg.removeprefix("Value error, ")))
    return problems
