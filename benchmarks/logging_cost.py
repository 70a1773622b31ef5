"""What the prediction log costs a saturated server, over REST and gRPC, in paired rounds.

    .venv/bin/python -m benchmarks.logging_cost [--seconds 5] [--rounds 5] [--no-wrk]
                                                [--runtime KEY=VALUE ...]

Two MLServers serve the same registered champion, one with the prediction log off and one
with it on (journal, shipper process, nx-27017 on this machine). Each round drives each of
them at c=16 over REST (wrk, or httpx without it) and gRPC (grpc.aio), in reverse order every
other round; the cost is 1 - on/off throughput, the median of the rounds with its spread.

After each log-on cell it reads the journal's backlog (the telescore_prediction_log_spooled
metric, and journaled - written rows) and waits for the shipper to drain it, so that no cell
pays for another's shipping; the shipper's and nx-27017's CPU per request are counted from the
cell's start to the end of that drain. `--runtime KEY=VALUE` sets a RuntimeOptions field of the
log-on server (e.g. `ship_max_defer=0`: ship at once, even while serving is busy), to compare
shipping settings. Prints, writes benchmarks/results/logging_cost.json, asserts nothing.
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
    from pydantic import ValidationError

    from telescore.serving.options import RuntimeOptions

    try:  # refuse a wrong option now, not after a minute of set-up
        RuntimeOptions(**args.options)
    except ValidationError as error:
        parser.error(f"--runtime: {error}")
    return args


def main() -> None:
    args = parse_arguments()
    report = Report("logging_cost", {"settings": vars(args)})
    rest_client = "wrk" if args.wrk and harness.wrk_available() else "httpx"
    with stack.Stack("logging-cost") as services:
        tracking, features, registered = services.champion()
        mongodb = services.mongodb()
        off = services.mlserver("log off", tracking)
        on = services.mlserver("log on", tracking, mongodb, args.options)
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

    rows = []
    for number in range(args.rounds):
        for (protocol, log), cells in results.items():
            cell = cells[number]
            cpu = [cell.cpu_us("server", False), cell.cpu_us("shipper"), cell.cpu_us("db")]
            after = [cell.after.get(key) for key in ("spooled", "unshipped", "drain s")]
            figures = [cell.figures.throughput, cell.figures.p50_ms, *cpu, *after]
            rows.append([f"{protocol} {log} #{number}", *figures, cell.figures.errors])
    report.table(
        f"Cells at c=16, {args.seconds:.0f} s each (REST via {rest_client}, gRPC via grpc.aio)",
        ["cell", "req/s", "p50 ms", "server us/req", "shipper us/req", "nx-27017 us/req"]
        + ["spooled at end", "unshipped", "drain s", "errors"],
        rows,
        "CPU per request: the server's during the cell, the shipper's and nx-27017's until the "
        "end of its drain; spooled: the backlog metric (the shipper's last report), unshipped: "
        "journaled - written rows",
    )
    report.line(f"\nLogging cost, 1 - on/off throughput, log on with {args.options}:")
    for protocol in ("REST", "gRPC"):
        on_cells, off_cells = results[protocol, "log on"], results[protocol, "log off"]
        throughputs = ([cell.figures.throughput for cell in c] for c in (on_cells, off_cells))
        ratio = harness.paired(*throughputs)
        costs = sorted(1 - value for value in ratio.per_round)

        def median(party: str, cells: list[harness.Cell] = on_cells) -> float:
            # The server's own CPU during the cell; the shipper's and MongoDB's until drained.
            return statistics.median(cell.cpu_us(party, party != "server") for cell in cells)

        drains = [cell.after["drain s"] for cell in on_cells]
        report.line(
            f"  {protocol}: {1 - ratio.median:+.1%} (rounds {costs[0]:+.1%} to {costs[-1]:+.1%}); "
            f"server CPU {median('server', off_cells):.0f} -> {median('server'):.0f} us/req; off "
            f"the request path: shipper {median('shipper'):.0f} us, nx-27017 {median('db'):.0f} "
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
