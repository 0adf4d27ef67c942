"""`python -m serving.cli`: the same as the `nextbest` command."""

from __future__ import annotations

from serving.cli import main

main()
