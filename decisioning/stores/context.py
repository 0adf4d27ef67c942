"""Context tables on disk: every version as Parquet under `<data_dir>/context/<table>/`,
and which one is current (`current.json`); a restarted shard loads the current ones."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from decisioning.stores.fs import filesystem

__all__ = ["ContextStore"]


class ContextStore:
    """Every table's versions as Parquet, and which one is current (`current.json`)."""

    KEEP = 5  # versions kept per table

    def __init__(self, data_dir: str) -> None:
        self.fs, root = filesystem(data_dir)
        self.root = root + "/context"

    def save(self, name: str, table: pa.Table, version: str) -> None:
        folder = f"{self.root}/{name}"
        self.fs.create_dir(folder, recursive=True)
        tmp = f"{folder}/.{version}.parquet"
        pq.write_table(table, tmp, filesystem=self.fs)
        self.fs.move(tmp, f"{folder}/{version}.parquet")
        current = self.current()
        current[name] = version
        with self.fs.open_output_stream(f"{self.root}/.current.json") as f:
            f.write(json.dumps(current, sort_keys=True).encode())
        self.fs.move(f"{self.root}/.current.json", f"{self.root}/current.json")
        infos = self.fs.get_file_info(pafs.FileSelector(folder))
        old = sorted(
            (
                i
                for i in infos
                if i.base_name.endswith(".parquet") and not i.base_name.startswith(".")
            ),
            key=lambda i: i.mtime_ns or 0,
        )
        for info in old[: -self.KEEP]:
            if info.base_name != f"{version}.parquet":
                self.fs.delete_file(info.path)

    def current(self) -> dict[str, str]:
        try:
            with self.fs.open_input_stream(f"{self.root}/current.json") as f:
                return dict(json.loads(f.read().decode()))
        except (FileNotFoundError, OSError):
            return {}

    def load(self, name: str, version: str) -> pa.Table:
        return pq.read_table(f"{self.root}/{name}/{version}.parquet", filesystem=self.fs)
