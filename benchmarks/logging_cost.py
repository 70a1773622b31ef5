"""What the prediction log costs a saturated server, over REST and gRPC, in paired rounds.

    .venv/bin/python -m benchmarks.logging_cost [--seconds 5] [--rounds 5] [--no-wrk]
                                                [--runtime KEY=VALUE ...]

`--runtime KEY=VALUE` sets a RuntimeOptions field of the log-on server (e.g.
`ship_max_defer=0`). How: docs/benchmarks/serving.md. Writes benchmarks/results/logging_cost.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics

from benchmarks import harness, stack
from benchmarks.report import Report


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per cell")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-wrk", dest="wrk", action="store_false", help="httpx for REST")
    parser.add_argument("--runtime", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    args.options = dict(option.split("=", 1) for option in args.runtime)
    for key, text in args.options.items():
        with contextlib.suppress(ValueError):
            args.options[key] = json.loads(text)  # numbers, true/false; else the text itself
    return args


def main() -> None:
    args = parse_arguments()
    report = Report("logging_cost", {"settings": vars(args)})
    rest_client = "wrk" if args.wrk and harness.wrk_available() else "httpx"
    with stack.Stack("logging-cost") as services:
        features, _ = services.champion()
        mongodb = services.mongodb()
        off = services.mlserver("log off")
        on = services.mlserver("log on", mongodb, args.options)
        services.start(off, on)
        report.data["idle_cores"] = idle = harness.idle_cores()
        report.log(f"log off and on up, log on with {args.options}; {idle:.2f} cores busy at idle")
        row = stack.prospect(features)
        arms = {}
        for protocol, client, kind, payload in (
            ("REST", rest_client, "http", stack.v2_body([row])),
            ("gRPC", "grpc.aio", "grpc", stack.grpc_request(row)),
        ):
            for server in (off, on):
                target = server.target(kind, payload, mongodb)
                harness.warm(target)
                arms[protocol, server.label] = lambda t=target, c=client: harness.measure(
                    t, c, 16, args.seconds
                )
        on.wait_drained()
        results = harness.run_rounds(arms, args.rounds, report.log)
        counts = on.log_counts()

    report.line(
        f"\nLogging cost at c=16 (REST via {rest_client}, gRPC via grpc.aio), 1 - on/off "
        f"throughput, log on with {args.options} (every cell: in the results JSON):"
    )
    for protocol in ("REST", "gRPC"):
        on_cells, off_cells = results[protocol, "log on"], results[protocol, "log off"]
        throughputs = ([cell.figures.throughput for cell in c] for c in (on_cells, off_cells))
        costs = [1 - ratio for ratio in harness.paired(*throughputs)]
        # The server's own CPU during the cell; the shipper's and MongoDB's until drained.
        logged = harness.medians(on_cells, ("server", "shipper", "db"), ("shipper", "db"))
        unlogged = harness.medians(off_cells, ("server",))
        drains = [cell.after["drain s"] for cell in on_cells]
        report.line(
            f"  {protocol}: {harness.spread(costs, '{:+.1%}', '')}; "
            f"server CPU {unlogged['server us']:.0f} -> {logged['server us']:.0f} us/req; off the "
            f"request path: shipper {logged['shipper us']:.0f} us, nx-27017 {logged['db us']:.0f} "
            f"us per request; unshipped at the end of a cell up to "
            f"{max(cell.after['unshipped'] for cell in on_cells):.0f} rows, drained in "
            f"{statistics.median(drains):.2f} s (max {max(drains):.2f} s)"
        )
    report.line(
        f"  journaled {counts['journaled']:.0f} rows, written {counts['written']:.0f}, "
        f"dead-lettered {counts['dead_lettered']:.0f}, refused {counts['refused']:.0f}"
    )
    report.data["cells"] = {" ".join(k): [c.as_dict() for c in v] for k, v in results.items()}
    report.save()


if __name__ == "__main__":
    main()
