"""The one way nextbest reaches the data dir: a pyarrow filesystem and a root in it.

A local path (or `file://…`) is the local disk; any other URI (`s3://…`, `gs://…`,
`hdfs://…`) goes through pyarrow's own filesystems. Every store under the data dir
(registry, catalogs, context tables, decision logs, budget ledger) and the Parquet sink
open their files through `filesystem()`.
"""

from __future__ import annotations

import os

import pyarrow.fs as pafs

from decisioning.journal.wal import fsync_path

__all__ = ["filesystem", "replace_file"]


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the root path in it (no trailing slash)."""
    if "://" in uri and not uri.startswith("file://"):
        fs, root = pafs.FileSystem.from_uri(uri)
        return fs, root.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(uri.removeprefix("file://")).rstrip("/")


def replace_file(fs: pafs.FileSystem, path: str, body: bytes) -> None:
    """Replace the file at `path` with `body`, whole: a reader sees the old file or the
    new one, never a torn one. On a local filesystem the temp file is fsynced, renamed
    over, and the directory fsynced. Other pyarrow filesystems offer no fsync: the temp
    file is written and moved with their own calls, which on object stores (S3, GCS)
    makes each object durable once its write returns and whole or absent to readers."""
    directory = path.rsplit("/", 1)[0]
    tmp = f"{path}.{os.getpid()}.tmp"
    if not isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(directory, recursive=True)
        with fs.open_output_stream(tmp) as f:
            f.write(body)
        fs.move(tmp, path)
        return
    os.makedirs(directory, exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_path(directory)
