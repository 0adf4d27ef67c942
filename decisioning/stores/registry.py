"""The model registry under the data dir: immutable versions and aliases per model.

    <data_dir>/models/<name>/<version>/model.txt
    <data_dir>/models/<name>/<version>/manifest.json
    <data_dir>/models/<name>/aliases.json        champion, challenger (share or shadow),
                                                 earlier champions (deployed.json before)
    <data_dir>/native/<sha256>/<native tag>.o     a model compiled for one kind of CPU

The data dir is a local path or any pyarrow filesystem URI (s3://, gs://, hdfs://...).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, replace
from typing import Any

import pyarrow.fs as pafs

from decisioning.errors import ModelError, ModelIntegrityError
from decisioning.policy.scoring import MANIFEST_FILE, MODEL_FILE, ModelBundle, ModelManifest
from decisioning.stores.fs import filesystem

__all__ = ["ALIASES_FILE", "NATIVE_MAGIC", "Aliases", "Registry"]

log = logging.getLogger("nextbest.registry")
NATIVE_MAGIC = b"nextbest-native-v1 sha256="
ALIASES_FILE = "aliases.json"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class Aliases:
    """Which versions of one model serve: the champion for everyone, a challenger for a
    sticky share of customers (or in shadow: scored and logged, never used), and the
    earlier champions, newest last, for rollback. Transitions return a new value."""

    champion: int | None = None
    challenger: int | None = None
    share: float = 0.0
    shadow: bool = False
    previous: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "challenger": self.challenger,
            "share": self.share,
            "shadow": self.shadow,
            "previous": list(self.previous),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Aliases:
        return cls(
            champion=d.get("champion"),
            challenger=d.get("challenger"),
            share=float(d.get("share", 0.0)),
            shadow=bool(d.get("shadow", False)),
            previous=tuple(d.get("previous", ())),
        )

    def promote(self, version: int | None = None) -> Aliases:
        """`version` (default: the challenger) becomes the champion."""
        version = self.challenger if version is None else version
        if version is None:
            raise ModelError("there is no challenger to promote; name a version")
        if version == self.champion:
            return self
        previous = self.previous + ((self.champion,) if self.champion is not None else ())
        if version == self.challenger:
            return Aliases(version, None, 0.0, False, previous[-20:])
        return replace(self, champion=version, previous=previous[-20:])

    def rollback(self) -> Aliases:
        """The champion before this one serves again (the challenger stays)."""
        if not self.previous:
            raise ModelError("there is no earlier champion to roll back to")
        return replace(self, champion=self.previous[-1], previous=self.previous[:-1])

    def split(self, version: int | None, share: float, shadow: bool = False) -> Aliases:
        """Give `version` a share of customers (or the shadow); None ends the test."""
        if version is None:
            return replace(self, challenger=None, share=0.0, shadow=False)
        if version == self.champion:
            raise ModelError(f"version {version} is the champion already")
        if not 0.0 <= share <= 1.0:
            raise ModelError("share must be between 0 and 1")
        return replace(self, challenger=version, share=0.0 if shadow else share, shadow=shadow)


class Registry:
    """Model versions on a pyarrow filesystem."""

    def __init__(self, data_dir: str) -> None:
        self.fs, root = filesystem(data_dir)
        self.root = root + "/models"
        self.native_root = root + "/native"

    def _read(self, path: str) -> str:
        with self.fs.open_input_stream(path) as f:
            return f.read().decode("utf-8")

    def _write(self, path: str, data: str | bytes) -> None:
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        self.fs.move(tmp, path)

    # -- native code: content-addressed by the model's sha256, one file per CPU kind ------

    def _native_path(self, sha256: str, tag: str) -> str:
        return f"{self.native_root}/{sha256}/{tag}.o"

    def read_native(self, sha256: str, tag: str | None) -> bytes | None:
        """The model's native code for CPU kind `tag`; None if not compiled or damaged.

        The file is `NATIVE_MAGIC`, the payload's sha256 and a newline, then the payload:
        LLVM would abort the process on a truncated object file, so a damaged one is
        never returned (it is logged and the shard scores with LightGBM).
        """
        if tag is None:
            return None
        path = self._native_path(sha256, tag)
        try:
            with self.fs.open_input_stream(path) as f:
                data = bytes(f.read())
        except FileNotFoundError:
            return None
        head, _, payload = data.partition(b"\n")
        if head != NATIVE_MAGIC + hashlib.sha256(payload).hexdigest().encode():
            log.warning("%s is damaged (checksum mismatch); ignoring it", path)
            return None
        return payload

    def write_native(self, sha256: str, tag: str, native: bytes) -> None:
        head = NATIVE_MAGIC + hashlib.sha256(native).hexdigest().encode()
        self._write(self._native_path(sha256, tag), head + b"\n" + native)

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def names(self) -> list[str]:
        if not self._exists(self.root):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.root))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def versions(self, name: str) -> list[int]:
        base = f"{self.root}/{name}"
        if not self._exists(base):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base))
        out = []
        for i in infos:
            complete = self._exists(f"{base}/{i.base_name}/{MANIFEST_FILE}")
            if i.type == pafs.FileType.Directory and i.base_name.isdigit() and complete:
                out.append(int(i.base_name))
        return sorted(out)

    def next_version(self, name: str) -> int:
        return max(self.versions(name), default=0) + 1

    def path(self, name: str, version: int) -> str:
        if not _NAME.match(name):
            raise ModelError(f"{name!r} is not a model name (lowercase letters, digits, _)")
        return f"{self.root}/{name}/{version}"

    def read(self, name: str, version: int, native_tag: str | None = None) -> ModelBundle:
        """A verified version; with `native_tag`, also its native code if compiled."""
        d = self.path(name, version)
        try:
            manifest = ModelManifest.from_dict(json.loads(self._read(f"{d}/{MANIFEST_FILE}")))
            text = self._read(f"{d}/{MODEL_FILE}")
        except FileNotFoundError:
            raise ModelError(f"model {name}@{version} is not in the registry") from None
        except json.JSONDecodeError as e:
            raise ModelIntegrityError(f"{d}/{MANIFEST_FILE}: {e}") from None
        return ModelBundle.verified(manifest, text, self.read_native(manifest.sha256, native_tag))

    def register(self, bundle: ModelBundle) -> ModelManifest:
        """Store a version; storing the same bytes again is a no-op, other bytes a refusal."""
        m = bundle.manifest
        d = self.path(m.name, m.version)
        if self._exists(f"{d}/{MANIFEST_FILE}"):
            existing = self.read(m.name, m.version)
            if existing.manifest.sha256 != m.sha256:
                raise ModelError(
                    f"{m.ref} already exists with different content; versions are immutable"
                )
            return existing.manifest
        self._write(f"{d}/{MODEL_FILE}", bundle.model_text)
        self._write(f"{d}/{MANIFEST_FILE}", json.dumps(m.to_dict(), indent=2, sort_keys=True))
        return m

    def write_extra(self, name: str, version: int, filename: str, text: str) -> None:
        """A file that goes with a version (its training report); not part of the model."""
        self._write(f"{self.path(name, version)}/{filename}", text)

    def aliases(self, name: str) -> Aliases:
        """The model's aliases (a deployment of before aliases: its deployed version)."""
        path = f"{self.root}/{name}/{ALIASES_FILE}"
        if self._exists(path):
            return Aliases.from_dict(json.loads(self._read(path)))
        legacy = f"{self.root}/{name}/deployed.json"
        if self._exists(legacy):
            return Aliases(champion=int(json.loads(self._read(legacy))["version"]))
        return Aliases()

    def set_aliases(self, name: str, aliases: Aliases) -> None:
        for v in (aliases.champion, aliases.challenger):
            if v is not None and v not in self.versions(name):
                raise ModelError(f"{name}@{v} is not in the registry")
        self._write(f"{self.root}/{name}/{ALIASES_FILE}", json.dumps(aliases.to_dict(), indent=2))

    def deployed(self, name: str) -> int | None:
        """The champion version."""
        return self.aliases(name).champion

    def set_deployed(self, name: str, version: int) -> None:
        """Make `version` the champion (the one before it can be rolled back to)."""
        self.set_aliases(name, self.aliases(name).promote(version))

    def deployed_bundles(self, native_tag: str | None = None) -> list[ModelBundle]:
        out = []
        for name in self.names():
            v = self.deployed(name)
            if v is not None:
                out.append(self.read(name, v, native_tag))
        return out
