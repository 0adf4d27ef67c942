"""Context tables at the ingress: a pushed version read from its body, JSON or msgpack
rows or a Parquet file, before the supervisor checks it against its spec and swaps it
on every shard."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from serving.wire import WireError, decode_body

__all__ = ["PARQUET_TYPES", "check_length", "table_of"]

PARQUET_TYPES = frozenset(("application/vnd.apache.parquet", "application/x-parquet"))


def check_length(headers: Mapping[str, str], limit: int) -> None:
    """413 before the body is read, when its declared length is over `limit`."""
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise WireError(413, "body_too_large", f"a table is at most {limit} bytes")


def table_of(raw: bytes, content_type: str | None, limit: int, max_depth: int) -> pa.Table:
    """The table a PUT /v1/context/{table} body holds: `{"rows": [{...}, ...]}` as JSON
    or msgpack, or a Parquet file (by its content type); at most `limit` bytes."""
    if len(raw) > limit:
        raise WireError(413, "body_too_large", f"a table is at most {limit} bytes")
    media = (content_type or "").split(";")[0].strip().lower()
    try:
        if media in PARQUET_TYPES:
            return pq.read_table(pa.BufferReader(raw))
        body = decode_body(raw, media or None, limit, max_depth)
        if not isinstance(body, dict) or set(body) != {"rows"}:
            raise WireError(422, "invalid_table", 'the body is {"rows": [{...}, ...]}')
        rows = body["rows"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise WireError(422, "invalid_table", "rows is a list of objects", "rows")
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as e:
        raise WireError(422, "invalid_table", f"not a table: {e}") from None
