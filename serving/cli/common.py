"""What every command group of the CLI shares: the config option and loading, the
server URL option, and how a command fails (a red message and an exit status, never a
traceback)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from decisioning.config import Config
from decisioning.config.loader import load_config
from decisioning.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG",
    "OUTCOME_NAMES",
    "ConfigOpt",
    "UrlOpt",
    "fail",
    "read_config",
]

OUTCOME_NAMES = ("impression", "click", "accept", "reject", "convert")
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Config file (YAML).")]
DEFAULT_CONFIG = Path("examples/nextbest.yaml")
UrlOpt = Annotated[str | None, typer.Option(help="Server URL (default: from the config).")]


def read_config(path: Path) -> Config:
    """The config file, with the catalog applied at runtime if there is one (training,
    registering and evaluating must see the actions the shards serve); exit 2 saying
    what is wrong with it."""
    from decisioning.stores.catalogs import serving_config

    try:
        return serving_config(load_config(path, os.environ))
    except ConfigError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None


def fail(message: str) -> typer.Exit:
    """Say why in red on stderr; the exit (status 1) for the caller to raise."""
    typer.secho(message, fg="red", err=True)
    return typer.Exit(1)
