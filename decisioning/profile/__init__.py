"""Live customer profiles as preallocated numeric columns, and `apply(event)`.

    events     Event, event_from_wire: what is applied
    schema     ProfileSchema: feature names, the column layout, the checks on an event
    windows    time buckets: how windows slide, expire and are read
    store      ProfileStore: one shard's profiles; apply, read, export, load, erase
    merge      RowState, merge_into: folding one profile into another (identity merges)
    ids        IdIndex: customer id -> row;  slots: customer id -> slot -> shard
    identity   aliases, forward pointers and the merge protocol

This package re-exports the public names of events, schema, store and merge.
"""

from __future__ import annotations

from decisioning.profile.events import CONSENT, PROFILE_UPDATE, Event, event_from_wire
from decisioning.profile.merge import RowState
from decisioning.profile.schema import ProfileSchema
from decisioning.profile.store import ProfileStore

__all__ = [
    "CONSENT",
    "PROFILE_UPDATE",
    "Event",
    "ProfileSchema",
    "ProfileStore",
    "RowState",
    "event_from_wire",
]
