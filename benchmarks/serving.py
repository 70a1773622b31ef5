"""Where the time of one prediction goes: telescore next to its floors and peers, in one run.

    .venv/bin/python -m benchmarks.serving [--seconds 3] [--latency-seconds 2] [--rounds 3]
                                           [--no-wrk]

One request's stages in process; then single-row latency at c=1 and throughput at c=16 of the
FastAPI floor and peers, MLServer's constant runtime and telescore (log off and on), in paired
rounds. What is compared and why: docs/benchmarks/serving.md. Writes
benchmarks/results/serving.{json,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
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
        text, version = (
            (orjson.dumps(prediction_ids).decode(), orjson.dumps(flags).decode()),
            registered.version,
        )
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


def median_figures(rounds: list[Cells]) -> dict[str, float]:
    """Summarise one (server, client) over its rounds: the median of each figure."""
    latency = harness.medians([each["c1"] for each in rounds])
    # The server's own CPU during the cell; the shipper's and MongoDB's until it settled.
    figures = harness.medians([each["c16"] for each in rounds], PARTIES, ("shipper", "db"))
    errors = latency["errors"] + figures["errors"]
    return figures | {"p50 c=1": latency["p50"], "p99 c=1": latency["p99"], "errors": errors}


def shown(label: str, client: str) -> str:
    """Name a server's row: its gRPC rows are marked."""
    return f"{label} (gRPC)" if client == "grpc.aio" else label


def report_servers(
    report: Report, results: dict[tuple[str, str], list[Cells]], main: str
) -> dict[tuple[str, str], dict[str, float]]:
    """Print the side-by-side table and the targets (`main`: the REST client); return medians."""
    summary = {key: median_figures(rounds) for key, rounds in results.items()}

    def ratio(label: str, client: str, reference: str) -> list[float]:
        # gRPC is compared with the constant runtime's gRPC, and with the peer via httpx.
        other = "httpx" if reference == PEER and client == "grpc.aio" else client
        pairs = ((label, client), (reference, other))
        throughputs = ([e["c16"].figures.throughput for e in results.get(k, [])] for k in pairs)
        return harness.paired(*throughputs)

    rows = []
    for (label, client), each in summary.items():
        ratios = [harness.median_of(ratio(label, client, ref)) for ref in (CONSTANT, PEER)]
        figures = [each[key] for key in ("p50 c=1", "p99 c=1", "req/s", "p50", "p99")]
        cores = [each[party] for party in PARTIES]
        rows.append([shown(label, client), client, *figures, *(f"{r:.2f}x" for r in ratios)])
        rows[-1] += [each["server us"], *cores, each["errors"]]
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
        p50, name = summary[ON, client]["p50 c=1"], shown(ON, client)
        floor = f">= 85% of MLServer's floor: {harness.spread(share, '{:.0%}', '')}"
        peer = f">= 9x the peer: {harness.spread(speed_up)}"
        for meets, text in (
            (harness.median_of(share) >= TARGET_FLOOR_SHARE, floor),
            (harness.median_of(speed_up) >= TARGET_PEER_SPEED_UP, peer),
            (p50 < TARGET_P50_MS, f"single-row p50 < 1 ms at c=1: {p50:.2f} ms"),
        ):
            report.line(f"  {'meets ' if meets else 'misses'} {name}, {client}, {text}")
    return summary


def main() -> None:
    from telescore.io.prediction_store import PredictionStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="c=16 cell, per round")
    parser.add_argument("--latency-seconds", type=float, default=2.0, help="c=1 cell, per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-wrk", dest="wrk", action="store_false", help="Python clients only")
    args = parser.parse_args()
    report = Report("serving", {"settings": vars(args)})
    main_client = "wrk" if args.wrk and harness.wrk_available() else "httpx"
    with stack.Stack("serving") as services:
        features, registered = services.champion()
        mongodb = services.mongodb()
        report.log(f"registered {registered.uri} as champion (fit on {len(features):,} rows)")
        # The in-process runtime, log on, ships to the same nx-27017 (in a database of its own).
        os.environ["TELESCORE_MONGODB_URI"] = mongodb.url
        os.environ["TELESCORE_MONGODB_DATABASE"] = "in-process"
        os.environ["TELESCORE_ENV_FILE"] = str(services.dir / "no.env")
        stages = asyncio.run(breakdown(registered, features, services.dir))
        servers = {
            FLOOR: services.fastapi(FLOOR, "floor_app", registered.uri),
            SCORER: services.fastapi(SCORER, "scorer_app", registered.uri),
            PEER: services.fastapi(PEER, "app", registered.uri),
            CONSTANT: services.constant_mlserver(CONSTANT),
            OFF: services.mlserver(OFF),
            ON: services.mlserver(ON, mongodb),
        }
        services.start(*servers.values())
        report.data["idle_cores"] = idle = harness.idle_cores()
        report.log(f"servers up; other processes keep {idle:.2f} cores busy at idle")
        row = stack.prospect(features)
        payloads = {"http": stack.v2_body([row]), "grpc": stack.grpc_request(row)}
        arms: dict[tuple[str, str], Callable[[], Cells]] = {}
        rest_clients = sorted({main_client, "httpx"}, reverse=True)  # wrk first
        for label, server in servers.items():
            # gRPC for MLServer's floor and telescore; the FastAPI apps: REST only.
            for kind in ["http", "grpc"] if label in (CONSTANT, OFF, ON) else ["http"]:
                body, path = payloads[kind], stack.INFER_PATH
                if label == PEER:
                    body, path = stack.compact({"rows": [row]}), "/predict"
                target = server.target(kind, body, mongodb, path)
                harness.warm(target)
                for client in ["grpc.aio"] if kind == "grpc" else rest_clients:
                    arms[label, client] = lambda t=target, c=client: {
                        "c1": harness.measure(t, c, 1, args.latency_seconds),
                        "c16": harness.measure(t, c, 16, args.seconds),
                    }
        results = harness.run_rounds(arms, args.rounds, report.log)
        drained, counts = servers[ON].wait_drained(), servers[ON].log_counts()
        # Counting a large collection takes nx-27017 seconds: not the log's 1.5 s timeout.
        documents = services.context.store(PredictionStore, timeout_ms=60_000).count()
    columns = ["stage", "median us", "p99 us"]
    report.table("One single-row request through the runtime, in process", columns, stages)
    summary = report_servers(report, results, main_client)
    on = [cells for (label, _), rounds in results.items() if label == ON for cells in rounds]
    drains = [cell.after["drain s"] for cells in on for cell in cells.values()]
    logged = summary[ON, main_client]
    report.line(
        f"\nPrediction log: the shipper drained after each log-on cell in "
        f"{statistics.median(drains):.2f} s (median; max {max(drains):.2f} s); "
        f"{counts['journaled']:.0f} rows journaled, {documents} documents in MongoDB "
        f"{drained:.1f} s after the last cell; {counts['dead_lettered']:.0f} dead-lettered, "
        f"{counts['refused']:.0f} requests refused; off the request path, CPU per request at "
        f"c=16: shipper {logged['shipper us']:.0f} us, nx-27017 {logged['db us']:.0f} us"
    )
    report.data["cells"] = {
        " | ".join(key): [{k: cell.as_dict() for k, cell in each.items()} for each in rounds]
        for key, rounds in results.items()
    }
    values: dict[str, dict[str, dict[str, float]]] = {"req/s": {}, "p50 c=1": {}}
    for (label, client), each in summary.items():
        for figure, series in values.items():
            series.setdefault(shown(label, client), {})[client] = each[figure]
    panels = [
        Panel("throughput at c=16 (req/s)", values["req/s"]),
        Panel("single-row p50 at c=1 (ms)", values["p50 c=1"], TARGET_P50_MS),
    ]
    report.save(panels, "Serving one registered model, single-row requests, 2 CPUs shared by all")


if __name__ == "__main__":
    main()
