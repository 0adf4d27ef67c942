"""The one way nextbest reaches the data dir: a pyarrow filesystem and a root in it.

A local path (or `file://…`) is the local disk; any other URI (`s3://…`, `gs://…`,
`hdfs://…`) goes through pyarrow's own filesystems. Every store under the data dir
(registry, catalogs, context tables, decision logs, budget ledger) and the Parquet sink
open their files through `filesystem()`.
"""

from __future__ import annotations

import os

import pyarrow.fs as pafs

__all__ = ["filesystem"]


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the root path in it (no trailing slash)."""
    if "://" in uri and not uri.startswith("file://"):
        fs, root = pafs.FileSystem.from_uri(uri)
        return fs, root.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(uri.removeprefix("file://")).rstrip("/")
