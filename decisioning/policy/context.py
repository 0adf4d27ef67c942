"""External context tables: data that is not per customer, looked up by key at
decision time (`context.weather[profile.zip].temp_c` in a rule).

A table arrives as Arrow (pushed as JSON/msgpack rows or Parquet, or loaded from a
Parquet file), is checked against its `context_tables` spec, versioned by content hash
and stored under `<data_dir>/context/<table>/`; each shard builds a key -> row index
from the Arrow table it receives through the Ray object store, and swaps it in with one
assignment, so a decision sees one version of a table or the next, never a mix.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from decisioning.config import ContextTableSpec
from decisioning.errors import InvalidInput

__all__ = ["ContextTable", "check_table", "key_of", "table_version"]


def key_of(value: Any) -> str | None:
    """Keys compare as text: 10115, 10115.0 and "10115" are one key."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def check_table(name: str, spec: ContextTableSpec, table: pa.Table) -> pa.Table:
    """The table with just the key and the spec's columns, typed; InvalidInput (naming
    the column) when it does not fit the spec."""
    missing = [c for c in (spec.key, *spec.columns) if c not in table.column_names]
    if missing:
        raise InvalidInput(
            f"context table {name}: missing column(s) {', '.join(missing)}",
            field=missing[0],
            code="invalid_table",
        )
    if table.num_rows > spec.max_rows:
        raise InvalidInput(
            f"context table {name}: {table.num_rows} rows, at most {spec.max_rows}",
            code="invalid_table",
        )
    cols: dict[str, pa.Array] = {}
    try:
        cols[spec.key] = table.column(spec.key).cast(pa.string())
        for col, kind in spec.columns.items():
            target = pa.float64() if kind == "numeric" else pa.string()
            cols[col] = table.column(col).cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidInput(
            f"context table {name}: a column has the wrong type ({e})", code="invalid_table"
        ) from None
    keys = cols[spec.key]
    if keys.null_count:
        raise InvalidInput(
            f"context table {name}: the key {spec.key} is null in some rows",
            field=spec.key,
            code="invalid_table",
        )
    return pa.table(cols)


def table_version(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:12]


@dataclass(frozen=True)
class ContextTable:
    """One version of a table, indexed by key for lookups."""

    name: str
    version: str
    rows: dict[str, tuple[Any, ...]]
    index: dict[str, int]
    loaded_at: float

    @classmethod
    def build(
        cls, name: str, spec: ContextTableSpec, table: pa.Table, version: str
    ) -> ContextTable:
        checked = check_table(name, spec, table)
        columns = list(spec.columns)
        data = [checked.column(c).to_pylist() for c in columns]
        rows: dict[str, tuple[Any, ...]] = {}
        for i, key in enumerate(checked.column(spec.key).to_pylist()):
            row = tuple(
                None if isinstance(v, float) and math.isnan(v) else v for v in (d[i] for d in data)
            )
            rows[key_of(key) or ""] = row  # a repeated key: the last row wins
        return cls(name, version, rows, {c: i for i, c in enumerate(columns)}, time.time())

    def get(self, key: Any, column: str) -> Any:
        row = self.rows.get(key_of(key))  # type: ignore[arg-type]
        return None if row is None else row[self.index[column]]

    def status(self) -> dict[str, Any]:
        return {"version": self.version, "rows": len(self.rows), "loaded_at": self.loaded_at}
