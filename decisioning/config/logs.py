"""The `logs` section: decision and outcome logs as Parquet, for training and
evaluation; every field can be set by NEXTBEST_LOGS_<FIELD>."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from decisioning.config.fields import StrictModel

__all__ = ["LogsSpec"]


class LogsSpec(StrictModel):
    """Decision and outcome logs (Parquet, for training and evaluation); every field can
    be set by NEXTBEST_LOGS_<FIELD>."""

    enabled: bool = Field(True, description="Log every decision and outcome.")
    dir: str | None = Field(
        None,
        description="Where the logs go: a local path or any pyarrow filesystem URI; "
        "default <data_dir>/logs.",
    )
    roll_rows: int = Field(
        50_000, ge=1, description="Candidate rows a shard buffers before writing a file."
    )
    roll_s: float = Field(
        60.0, gt=0, description="...or seconds, whichever comes first (an idle shard too)."
    )
    compression: Literal["zstd", "snappy", "none"] = Field(
        "zstd", description="Parquet compression of the log files."
    )
    max_pending: int = Field(
        4,
        ge=1,
        description="Rolled files waiting for the writer thread; beyond it the shard waits "
        "(bounded memory, nothing dropped).",
    )
