"""Durability of a shard's state: write-ahead log, snapshots, fencing."""
