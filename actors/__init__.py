"""Shard actors, the supervisor and the router. `shard.py`, `supervisor.py` (with its
concerns in `rollout.py`, `catalog.py`, `context_tables.py`, `audit.py`), `fleet.py` and
`router.py` are plain classes; `shard_actor.py` and `remote.py` are the edges that make
them Ray actors and hold Ray handles: the only modules here that call ray.*."""
