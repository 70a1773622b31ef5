"""Where the time of one prediction goes: telescore next to its floors and peers, in one run.

    .venv/bin/python -m benchmarks.serving [--seconds 3] [--latency-seconds 2] [--rounds 3]
                                           [--no-wrk] [--levers]

It registers the real model (all 41,188 rows) in an MLflow server of its own and serves that
version with OMP_NUM_THREADS=1, one process and no access log each, on 127.0.0.1:

- FastAPI that parses the V2 JSON body and answers a constant (the HTTP floor);
- FastAPI + the NumPy scorer telescore compiles (the same arithmetic, without MLServer);
- FastAPI + scikit-learn `predict_proba` on a DataFrame (the peer a user would write);
- MLServer with a runtime that answers a constant (MLServer's floor), REST and gRPC;
- telescore's MLServer, prediction log off, and on (journal + shipper + nx-27017 on this box);
- with --levers, telescore log off with parallel_workers=1, and with access_log=True.

Single-row requests: latency at c=1, throughput at c=16, from wrk (when installed) and the
asyncio clients (httpx, grpc.aio). Every (server, client) runs once per round, in reverse order
every other round; ratios are medians of per-round ratios. An in-process breakdown of one
request through the runtime comes first. Prints, writes benchmarks/results/serving.{json,png},
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import harness, stack
from benchmarks.report import Panel, Report

FLOOR, SCORER = "FastAPI floor (V2 JSON, constant)", "FastAPI + NumPy scorer"
PEER, CONSTANT = "FastAPI + scikit-learn (peer)", "MLServer, constant runtime"
OFF, ON = "telescore, log off", "telescore, log on"
TARGET_FLOOR_SHARE, TARGET_PEER_SPEED_UP, TARGET_P50_MS = 0.85, 9.0, 1.0
PARTIES = ("server", "shipper", "db", "client", "other")
Cells = dict[str, harness.Cell]
"""One round of one (server, client): {"c1": latency cell, "c16": throughput cell}."""


# -- in process -----------------------------------------------------------------------------------


async def timed(label: str, call: Callable[[], Any], per: int = 1) -> list[Any]:
    """Call (and await) `call` for half a second; return [label, median µs, p99 µs] per `per`."""
    durations: list[float] = []
    deadline = time.perf_counter() + 0.5
    while time.perf_counter() < deadline or len(durations) < 50:
        started = time.perf_counter()
        result = call()
        if inspect.isawaitable(result):
            await result
        durations.append((time.perf_counter() - started) * 1e6 / per)
    durations = durations[5:]  # the first calls fill caches
    return [label, statistics.median(durations), harness.percentile(durations, 99)]


async def breakdown(registered: stack.Registered, features: Any, work: Path) -> list[list[Any]]:
    """Time each stage of one single-row request through TelescoreRuntime, in process."""
    import orjson
    import pandas as pd
    from mlserver.settings import ModelParameters, ModelSettings
    from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput

    from telescore.core import requests
    from telescore.core.features import feature_ranges
    from telescore.core.prediction_ids import PredictionIds
    from telescore.core.predictions import JournalEntry, entry_payload
    from telescore.core.schema import FEATURES
    from telescore.core.scoring import compile_scorer, predict_proba_scorer
    from telescore.io.journal import JournalWriter
    from telescore.serving.runtime import TelescoreRuntime

    body = stack.v2_body([stack.prospect(features)])
    parsed = InferenceRequest.model_validate_json(body)

    def validate(request: Any = parsed) -> Any:
        requests.check_request_id("benchmark")
        return requests.validate_inputs(request.inputs, max_rows=1000)

    batch, scorer = validate(), compile_scorer(registered.pipeline)
    ranges, ids = requests.TrainingRanges(feature_ranges(features)), PredictionIds()
    scores, flags, prediction_ids = scorer(batch), ranges.flags(batch), ids.new(1)

    def entry() -> bytes:
        columns = [batch.columns[name] for name in FEATURES]
        now = time.time()
        return entry_payload(JournalEntry(prediction_ids, "id", now, 0.1, columns, scores, flags))

    def respond() -> InferenceResponse:
        text = orjson.dumps(prediction_ids).decode(), orjson.dumps(flags).decode()
        version = registered.version
        parameters = Parameters(
            model_version=version,
            route="champion",
            prediction_ids=text[0],
            out_of_range=text[1],
            latency_us=100,
        )
        output = ResponseOutput(name="probability", shape=[1], datatype="FP64", data=scores)
        return InferenceResponse(
            model_name=stack.MODEL, model_version=version, parameters=parameters, outputs=[output]
        )

    journal, payload = JournalWriter(work / "journal-breakdown", {"format": 1}), entry()
    parse = InferenceRequest.model_validate_json
    rows = [
        await timed("parse V2 JSON into InferenceRequest (MLServer)", lambda: parse(body)),
        await timed("check id + validate_inputs", validate),
        await timed("score: compiled scorer (plain Python for a few rows)", lambda: scorer(batch)),
        await timed("out-of-range flags", lambda: ranges.flags(batch)),
        await timed("prediction ids (UUIDv7)", lambda: ids.new(1)),
        await timed("journal entry: lists + orjson", entry),
        await timed(
            "journal append: a copy into the mapped segment", lambda: journal.append(payload, 1)
        ),
        await timed("build the InferenceResponse", respond),
    ]
    journal.close()
    rows.append(["sum of the stages above", sum(row[1] for row in rows), None])
    for log in (False, True):
        extra = {"prediction_log": log, "journal_dir": str(work / "journal-in-process")}
        parameters = ModelParameters(uri=f"models:/{stack.MODEL}@champion", extra=extra)
        runtime = TelescoreRuntime(
            ModelSettings(name=stack.MODEL, implementation=TelescoreRuntime, parameters=parameters)
        )
        await runtime.load()

        def predict(runtime: Any = runtime) -> Any:
            parsed.id = None  # as sent: the runtime generates one
            return runtime.predict(parsed)

        label = "log on: journal, live shipper" if log else "log off"
        rows.append(await timed(f"TelescoreRuntime.predict, {label}", predict))
        await runtime.unload()
    one, pipeline = pd.DataFrame([stack.prospect(features)]), registered.pipeline
    thousand = validate(parse(stack.v2_body(features.tail(1000))))
    reference = predict_proba_scorer(pipeline)
    difference = max(abs(a - b) for a, b in zip(scorer(thousand), reference(thousand), strict=True))
    return rows + [
        await timed("predict_proba, DataFrame of 1 row", lambda: pipeline.predict_proba(one)),
        await timed(
            "DataFrame + predict_proba, 1,000 rows, per row", lambda: reference(thousand), 1000
        ),
        await timed("NumPy scorer, 1,000 rows, per row", lambda: scorer(thousand), 1000),
        [f"largest |NumPy - predict_proba|, 1,000 rows: {difference:.1e}", None, None],
    ]


# -- servers --------------------------------------------------------------------------------------


def start_servers(services: stack.Stack, tracking: str, model: str, levers: bool) -> dict[str, Any]:
    """Start every server; return them by label."""
    servers = {
        FLOOR: services.fastapi(FLOOR, "floor_app", tracking, model),
        SCORER: services.fastapi(SCORER, "scorer_app", tracking, model),
        PEER: services.fastapi(PEER, "app", tracking, model),
        CONSTANT: services.constant_mlserver(CONSTANT, tracking),
        OFF: services.mlserver(OFF, tracking),
        ON: services.mlserver(ON, tracking, services.servers["nx-27017"]),
    }
    if levers:
        for name, option in (("parallel_workers", 1), ("access_log", True)):
            label = f"{OFF}, {name}={option}"
            servers[label] = services.mlserver(label, tracking, server={name: option})
    services.start(*servers.values())
    return servers


def median_figures(rounds: list[Cells]) -> dict[str, float]:
    """Summarise one (server, client) over its rounds: the median of each figure."""

    def median(cell: str, figure: Callable[[harness.Cell], float]) -> float:
        return statistics.median(figure(each[cell]) for each in rounds)

    figures = {
        "p50 c=1": median("c1", lambda c: c.figures.p50_ms),
        "p99 c=1": median("c1", lambda c: c.figures.p99_ms),
        "req/s": median("c16", lambda c: c.figures.throughput),
        "p50": median("c16", lambda c: c.figures.p50_ms),
        "p99": median("c16", lambda c: c.figures.p99_ms),
        "errors": sum(c.figures.errors for each in rounds for c in each.values()),
    }
    for party in PARTIES:
        figures[party] = median("c16", lambda c, p=party: c.usage.cores().get(p, 0.0))
        # The server's own CPU during the cell; the shipper's and MongoDB's until it settled.
        settled = party in ("shipper", "db")
        figures[f"{party} us"] = median("c16", lambda c, p=party, s=settled: c.cpu_us(p, s))
    return figures


def report_servers(report: Report, results: dict[tuple[str, str], list[Cells]], main: str) -> None:
    """Print the side-by-side table, the targets and the layers; `main` is the REST client."""
    summary = {key: median_figures(rounds) for key, rounds in results.items()}

    def ratio(label: str, client: str, reference: str) -> harness.Ratio:
        # gRPC is compared with the constant runtime's gRPC, and with the peer via httpx.
        other = "httpx" if reference == PEER and client == "grpc.aio" else client
        pairs = ((label, client), (reference, other))
        throughputs = ([e["c16"].figures.throughput for e in results.get(k, [])] for k in pairs)
        return harness.paired(*throughputs)

    def name(label: str, client: str) -> str:
        return f"{label} (gRPC)" if client == "grpc.aio" else label

    rows = []
    for (label, client), each in summary.items():
        ratios = [f"{ratio(label, client, ref).median:.2f}x" for ref in (CONSTANT, PEER)]
        figures = [each[key] for key in ("p50 c=1", "p99 c=1", "req/s", "p50", "p99")]
        cores = [each[party] for party in PARTIES]
        rows.append([name(label, client), client, *figures, *ratios, each["server us"], *cores])
        rows[-1].append(each["errors"])
    columns = "server|client|p50 c=1|p99 c=1|req/s c=16|p50|p99|/floor|/peer|srv us"
    report.table(
        "Single-row requests from 127.0.0.1 (medians of rounds)",
        [*columns.split("|"), "cores: srv", "shipper", "db", "client", "other", "errors"],
        rows,
        "ms; /floor, /peer: c=16 throughput over MLServer's constant runtime and the FastAPI + "
        "scikit-learn peer, median of per-round ratios, same client (gRPC: the peer via httpx); "
        "srv us: server CPU per request at c=16, shipper apart; cores: CPU s per wall s at c=16",
    )
    report.line("\nTargets, prediction log on (median of paired rounds, spread in brackets):")
    for client in (main, "grpc.aio"):
        share, speed_up = ratio(ON, client, CONSTANT), ratio(ON, client, PEER)
        p50 = summary[ON, client]["p50 c=1"]
        for meets, text in (
            (share.median >= TARGET_FLOOR_SHARE, f">= 85% of MLServer's floor: {share.show(True)}"),
            (speed_up.median >= TARGET_PEER_SPEED_UP, f">= 9x the peer: {speed_up.show()}"),
            (p50 < TARGET_P50_MS, f"single-row p50 < 1 ms at c=1: {p50:.2f} ms"),
        ):
            report.line(f"  {'meets ' if meets else 'misses'} {name(ON, client)}, {client}, {text}")

    layers, previous = [], None
    for label in (FLOOR, SCORER, CONSTANT, OFF, ON):
        now = summary[label, main]["p50 c=1"], summary[label, main]["server us"]
        added = [now[0] - previous[0], now[1] - previous[1]] if previous else [None, None]
        layers.append([label, now[0], added[0], now[1], added[1]])
        previous = previous if label == SCORER else now  # the scorer peer is a side branch
    logged = summary[ON, main]
    report.table(
        f"Where the time goes, layer by layer (REST via {main})",
        ["layer", "p50 c=1 ms", "added", "server CPU us/req", "added"],
        layers,
        "added: over the row above (the scorer peer: over the FastAPI floor). Off the request "
        f"path, per request: shipper {logged['shipper us']:.0f} us, nx-27017 "
        f"{logged['db us']:.0f} us of CPU",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="c=16 cell, per round")
    parser.add_argument("--latency-seconds", type=float, default=2.0, help="c=1 cell, per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-wrk", dest="wrk", action="store_false", help="Python clients only")
    parser.add_argument("--levers", action="store_true", help="parallel_workers=1, access_log")
    args = parser.parse_args()
    report = Report("serving", {"settings": vars(args)})
    main_client = "wrk" if args.wrk and harness.wrk_available() else "httpx"
    with stack.Stack("serving") as services:
        tracking, features, registered = services.champion()
        mongodb = services.mongodb()
        report.log(f"registered {registered.uri} as champion (fit on {len(features):,} rows)")
        # The in-process runtime, log on, ships to the same nx-27017 (in a database of its own).
        os.environ["TELESCORE_MONGODB_URI"] = mongodb.url
        os.environ["TELESCORE_MONGODB_DATABASE"] = "in-process"
        os.environ["TELESCORE_ENV_FILE"] = str(services.dir / "no.env")
        stages = asyncio.run(breakdown(registered, features, services.dir))
        servers = start_servers(services, tracking, registered.uri, args.levers)
        report.data["idle_cores"] = idle = harness.idle_cores()
        report.log(f"servers up; other processes keep {idle:.2f} cores busy at idle")
        row = stack.prospect(features)
        payloads = {"http": stack.v2_body([row]), "grpc": stack.grpc_request(row)}
        arms: dict[tuple[str, str], Callable[[], Cells]] = {}
        for label, server in servers.items():
            # gRPC for MLServer's floor and telescore; the FastAPI apps and the levers: REST only.
            kinds = ["http", "grpc"] if label in (CONSTANT, OFF, ON) else ["http"]
            for kind in kinds:
                payload, path = payloads[kind], stack.INFER_PATH
                if label == PEER:
                    payload, path = json.dumps({"rows": [row]}).encode(), "/predict"
                target = server.target(kind, payload, mongodb, path)
                harness.warm(target)
                clients = (
                    ["grpc.aio"] if kind == "grpc" else sorted({main_client, "httpx"}, reverse=True)
                )  # wrk first
                for client in clients:
                    arms[label, client] = lambda t=target, c=client: {
                        "c1": harness.measure(t, c, 1, args.latency_seconds),
                        "c16": harness.measure(t, c, 16, args.seconds),
                    }
        results = harness.run_rounds(arms, args.rounds, report.log)
        drained, counts = servers[ON].wait_drained(), servers[ON].log_counts()
        documents = mongodb.documents("benchmark")
    columns = ["stage", "median us", "p99 us"]
    report.table("One single-row request through the runtime, in process", columns, stages)
    report_servers(report, results, main_client)
    logged = [cells for (label, _), rounds in results.items() if label == ON for cells in rounds]
    drains = [cell.after["drain s"] for cells in logged for cell in cells.values()]
    report.line(
        f"\nPrediction log: the shipper drained after each log-on cell in "
        f"{statistics.median(drains):.2f} s (median; max {max(drains):.2f} s); "
        f"{counts['journaled']:.0f} rows journaled, {documents} documents in MongoDB "
        f"{drained:.1f} s after the last cell; {counts['dead_lettered']:.0f} dead-lettered, "
        f"{counts['refused']:.0f} requests refused"
    )
    report.data["cells"] = {
        " | ".join(key): [{k: cell.as_dict() for k, cell in each.items()} for each in rounds]
        for key, rounds in results.items()
    }
    throughput: dict[str, dict[str, float]] = {}
    latency: dict[str, dict[str, float]] = {}
    for (label, client), rounds in results.items():
        each, name = median_figures(rounds), f"{label} (gRPC)" if client == "grpc.aio" else label
        throughput.setdefault(name, {})[client] = each["req/s"]
        latency.setdefault(name, {})[client] = each["p50 c=1"]
    panels = [
        Panel("throughput at c=16 (req/s)", throughput),
        Panel("single-row p50 at c=1 (ms)", latency, TARGET_P50_MS),
    ]
    report.save(panels, "Serving one registered model, single-row requests, 2 CPUs shared by all")


if __name__ == "__main__":
    main()
