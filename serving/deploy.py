"""Module-level application for `serve build` / `serve deploy` on a cluster.

    serve build serving.deploy:app -o serve_config.yaml
    NEXTBEST_CONFIG=/etc/nextbest.yaml serve deploy serve_config.yaml

The config file comes from NEXTBEST_CONFIG (default examples/nextbest.yaml) and
NEXTBEST_* overrides; the first ingress replica creates the supervisor and the shards.
"""

from __future__ import annotations

import os

from serving.app import app_builder

app = app_builder({"config": os.environ.get("NEXTBEST_CONFIG", "examples/nextbest.yaml")})
