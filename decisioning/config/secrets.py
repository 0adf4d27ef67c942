"""The secrets a config names by environment variable, resolved in the process that
uses them.

The config holds only the *names* of the variables (`auth.model_key_env`,
`delivery.link_key_env`). The process that needs a key (a shard verifying a model,
the ingress opening a link, `nextbest train` signing one) resolves them from its own
environment at its edge, `Secrets.resolve(config, os.environ)`, and the core receives
the keys; nothing under decisioning/ reads the environment.

Why per process, not once in the driver: the config travels to every shard actor (as
its constructor argument, which Ray keeps to restart it). A key resolved in the driver
would travel with it, be stored by Ray, and make a node that lacks the variable accept
models anyway. Resolved where it is used, a node without the key refuses every model
(fails closed), as documented, and no key ever leaves the process that read it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from decisioning.errors import ModelIntegrityError

if TYPE_CHECKING:
    from decisioning.config.tree import Config

__all__ = ["Secrets"]


@dataclass(frozen=True, slots=True)
class Secrets:
    """The model signing key and the open-link sealing key of one process (None: unset)."""

    model_key_env: str | None = None  # the variable named by auth.model_key_env
    model_key_value: bytes | None = field(default=None, repr=False)
    link_key: bytes | None = field(default=None, repr=False)  # 32 bytes, seals open links

    @classmethod
    def resolve(cls, config: Config, environ: Mapping[str, str]) -> Secrets:
        """Read the variables `config` names from `environ` (this process's, at the edge);
        an empty value counts as unset."""
        model_env = config.auth.model_key_env
        link_env = config.delivery.link_key_env
        model = environ.get(model_env) if model_env else None
        link = environ.get(link_env) if link_env else None
        return cls(
            model_key_env=model_env,
            model_key_value=model.encode() if model else None,
            link_key=hashlib.sha256(link.encode()).digest() if link else None,
        )

    def model_key(self) -> bytes | None:
        """The model signing key, or None when models need no signature. Configured but
        not in the environment: an error (fail closed), not a silent pass."""
        if self.model_key_env is None:
            return None
        if self.model_key_value is None:
            raise ModelIntegrityError(
                f"auth.model_key_env is {self.model_key_env} but it is not set in this "
                "process's environment: no model can be verified"
            )
        return self.model_key_value
