"""`python -m nextbest_client load`: load through the client (loadtest.py), printed as
a line or as JSON; `python -m nextbest_client slots`: the slot map the server publishes."""

from __future__ import annotations

import argparse
import json
import os
import sys

from nextbest_client.client import Client
from nextbest_client.loadtest import run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nextbest_client")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the ingress")
    p.add_argument("--key", default=os.environ.get("NEXTBEST_API_KEY"),
                   help="API key (default: $NEXTBEST_API_KEY)")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="a closed loop of decisions or event batches")
    load.add_argument("--what", choices=("decide", "events"), default="decide")
    load.add_argument("--seconds", type=float, default=10.0)
    load.add_argument("--concurrency", type=int, default=16)
    load.add_argument("--customers", type=int, default=1000)
    load.add_argument("--batch", type=int, default=100, help="events per call (--what events)")
    load.add_argument("--no-routing", action="store_true", help="everything via the ingress")
    load.add_argument("--json", action="store_true", help="one JSON object")
    load.add_argument("--json-body", action="store_true", help="JSON bodies, not msgpack")
    sub.add_parser("slots", help="print GET /v1/cluster/slots")
    args = p.parse_args(argv)
    if args.command == "slots":
        with Client(args.url, args.key) as nb:
            m = nb.cluster_slots()
        print(json.dumps({"epoch": m.epoch, "slots": m.ranges, "endpoints": m.endpoints}))
        return 0
    r = run(
        args.url, args.key, what=args.what, seconds=args.seconds, concurrency=args.concurrency,
        customers=args.customers, batch=args.batch, routing=not args.no_routing,
        msgpack=not args.json_body,
    )  # fmt: skip
    if args.json:
        print(json.dumps(r.as_dict()))
    else:
        print(f"{r.what} {'routed' if r.routing else 'via the ingress'}: {r.rate:.0f} calls/s, "
              f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, p99.9 {r.p999_ms:.2f} ms, "
              f"{r.errors} errors {r.errors_by_code or ''}, retries {r.retries}, "
              f"moved {r.moved}, requests per endpoint {r.requests}")  # fmt: skip
    return 0 if r.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
