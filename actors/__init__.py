"""Shard actors and the supervisor. `shard.py` and `supervisor.py` are plain classes;
`remote.py` is the one module that makes them Ray actors and calls ray.*."""
