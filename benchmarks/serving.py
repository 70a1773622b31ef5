"""Serve one registered model five ways and measure latency and throughput side by side.

Run from the project root (the `-m` matters: Deepchecks installs a top-level `benchmarks`
package of its own, which a plain `python benchmarks/serving.py` would shadow this one with):

    .venv/bin/python -m benchmarks.serving [--seconds 8] [--rounds 4] [--latency-seconds 3]

(--help lists the rest: --no-wrk, --access-log-lever, ...).

It starts, on free ports under a temporary folder, an MLflow server (the registry), trains
build_pipeline(ModelParams()) on all 41,188 rows and registers it as `champion`, then serves
that one version with:

- a plain FastAPI + scikit-learn endpoint (benchmarks/fastapi_peer.py, uvicorn, one worker);
- `mlflow models serve --env-manager local` (uvicorn, one worker);
- telescore's MLServer (V2 REST and gRPC), prediction log off, and on (to nx-27017);
- and, as levers, MLServer with parallel_workers=1 and with access_log=True (debug mode).

Every server runs with OMP_NUM_THREADS=1 and no access log (unless that is the lever). Each
is measured alone, with single-row requests from 127.0.0.1: latency at concurrency 1 and
throughput at concurrency 16, from an asyncio client (httpx, or grpc.aio) and from `wrk` when
it is installed. Client and server share the machine's cores; the CPU each used, and the CPU
other processes on the machine used meanwhile, is reported with every cell. The in-process
floor (predict_proba, the NumPy scorer, the runtime's predict without transport) comes first.

Figures are printed, written to benchmarks/results/serving.json and drawn in
benchmarks/results/serving.png. Nothing is asserted: targets are printed as meets/misses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

# Before NumPy loads: one BLAS/OpenMP thread here too, as in every server.
os.environ["OMP_NUM_THREADS"] = "1"
# Progress bars would interleave with the figures on every model download.
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

from benchmarks import load as load_tools  # noqa: E402 - after the thread setting
from benchmarks import serving_stack as stack  # noqa: E402

PEER = "peer"
MLFLOW_SERVE = "mlflow"
REST_OFF = "rest-off"
REST_ON = "rest-on"
GRPC_OFF = "grpc-off"
GRPC_ON = "grpc-on"
REST_WORKERS = "rest-workers-1"
REST_ACCESS_LOG = "rest-access-log"
HIGH_CONCURRENCY = 16
PREDICTIONS_DATABASE = "benchmark"
WARM_UP_SECONDS = 0.5
IN_PROCESS_SECONDS = 0.6
TARGET_SPEED_UP = 5.0
TARGET_P50_MS = 5.0
TARGET_LOG_COST = 0.05


@dataclass
class Target:
    """One way of serving the model, and how to send it a single-row request."""

    key: str
    label: str
    kind: str
    """"http" or "grpc"."""
    address: str
    """URL to POST to, or host:port for gRPC."""
    payload: Any
    """JSON bytes for HTTP, a ModelInferRequest for gRPC."""
    service: Any
    """The ServiceProcess serving it (its process group's CPU is measured)."""
    database: Any = None
    """The MongoDB ServiceProcess its predictions go to, if they are logged."""
    lever: bool = False
    """Measured at concurrency 16 only, to compare with REST_OFF."""
    cells: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Cell name ("httpx c=1", "wrk c=16", ...) -> one measurement per round."""


# -- CPU accounting -------------------------------------------------------------------------------


@dataclass
class CpuMeter:
    """CPU seconds used by the server, its database, the client and the rest during a cell."""

    server_pid: int
    database_pid: int | None
    client_is_child: bool
    start: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def _now(self) -> tuple[float, float, float, float]:
        if self.client_is_child:
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            client = usage.ru_utime + usage.ru_stime
        else:
            client = time.process_time()
        server = stack.process_group_cpu_seconds(self.server_pid)
        database = stack.process_group_cpu_seconds(self.database_pid) if self.database_pid else 0.0
        return server, database, client, stack.machine_busy_seconds()

    def __enter__(self) -> CpuMeter:
        self.start = self._now()
        return self

    def __exit__(self, *exc_info: object) -> None:
        server, database, client, busy = self._now()
        self.server = server - self.start[0]
        self.database = database - self.start[1]
        self.client = client - self.start[2]
        used = self.server + self.database + self.client
        self.other = max(0.0, busy - self.start[3] - used)


def background_cores(seconds: float = 3.0) -> float:
    """Return the cores other processes keep busy while the benchmark sits idle."""
    before, started = stack.machine_busy_seconds(), time.perf_counter()
    time.sleep(seconds)
    return (stack.machine_busy_seconds() - before) / (time.perf_counter() - started)


# -- in-process floor -----------------------------------------------------------------------------


def time_calls(call: Callable[[], Any], seconds: float = IN_PROCESS_SECONDS) -> dict[str, float]:
    """Call `call` repeatedly for about `seconds`; return per-call median and p99 in µs."""
    for _ in range(5):
        call()
    durations = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(durations) < 20:
        started = time.perf_counter()
        call()
        durations.append((time.perf_counter() - started) * 1e6)
    return {
        "calls": len(durations),
        "median_us": statistics.median(durations),
        "p99_us": load_tools.percentile(durations, 99),
    }


def measure_in_process(pipeline: Any, features: Any, row: dict[str, Any]) -> dict[str, Any]:
    """Time the model with no server: the floor every server adds its transport to."""
    import pickle

    import pandas as pd

    from telescore.core.requests import InputTensor, validate_inputs
    from telescore.core.schema import FEATURES
    from telescore.core.scoring import compile_scorer, fast_scorer, predict_proba_scorer
    from telescore.io.serving_client import inference_request

    def tensors(request: dict[str, Any]) -> list[InputTensor]:
        return [
            InputTensor(each["name"], each["datatype"], each["shape"], each["data"])
            for each in request["inputs"]
        ]

    batch = features.tail(1000).reset_index(drop=True)
    one_frame = pd.DataFrame([row])
    one_tensors = tensors(inference_request([row]))
    batch_tensors = tensors(inference_request(batch))
    one_columns = validate_inputs(one_tensors).columns
    batch_columns = validate_inputs(batch_tensors).columns
    fast = compile_scorer(pipeline)
    reference = predict_proba_scorer(pipeline)
    one_batch = validate_inputs(one_tensors)

    def log_entry() -> None:
        # What the runtime does on the event loop per request when the log is on: plain lists,
        # pickled for the writer process (`LogProcess.submit`).
        columns = [one_batch.columns[name].tolist() for name in FEATURES]
        pickle.dumps(("benchmark", 0.0, 0.1, columns, [0.5], [[]]), pickle.HIGHEST_PROTOCOL)

    entries = {
        "predict_proba, DataFrame of 1 row": (lambda: pipeline.predict_proba(one_frame), 1),
        "predict_proba, DataFrame of 1,000 rows": (lambda: pipeline.predict_proba(batch), 1000),
        "NumPy fast scorer, 1 row": (lambda: fast(one_columns), 1),
        "NumPy fast scorer, 1,000 rows": (lambda: fast(batch_columns), 1000),
        "validate_inputs + NumPy scorer, 1 row": (
            lambda: fast(validate_inputs(one_tensors).columns),
            1,
        ),
        "validate_inputs + NumPy scorer, 1,000 rows": (
            lambda: fast(validate_inputs(batch_tensors).columns),
            1000,
        ),
        "runtime fallback (DataFrame + predict_proba), 1 row": (lambda: reference(one_columns), 1),
        "prediction log entry (on the request path), 1 row": (log_entry, 1),
    }
    results: dict[str, Any] = {}
    for label, (call, rows) in entries.items():
        figures = time_calls(call)
        figures["rows"] = rows
        figures["per_row_us"] = figures["median_us"] / rows
        results[label] = figures
    difference = float(abs(fast(batch_columns) - reference(batch_columns)).max())
    return {
        "calls": results,
        "fast_path_recognised": fast_scorer(pipeline) is not None,
        "fast_vs_predict_proba_max_abs_difference": difference,
    }


def measure_runtime_in_process(body: bytes) -> dict[str, float]:
    """Time TelescoreRuntime.predict on a parsed request: the server's work minus transport."""
    from mlserver.settings import ModelParameters, ModelSettings
    from mlserver.types import InferenceRequest

    from telescore.serving.runtime import TelescoreRuntime

    settings = ModelSettings(
        name="telemarketing",
        implementation=TelescoreRuntime,
        parameters=ModelParameters(
            uri=f"models:/{stack.REGISTERED_MODEL}@champion", extra={"prediction_log": False}
        ),
    )

    async def run() -> dict[str, dict[str, float]]:
        runtime = TelescoreRuntime(settings)
        await runtime.load()

        async def parse_and_predict() -> None:
            await runtime.predict(InferenceRequest.model_validate_json(body))

        async def predict_only() -> None:
            await runtime.predict(parsed)

        parsed = InferenceRequest.model_validate_json(body)
        results = {}
        for label, call in (
            ("TelescoreRuntime.predict, parsed request, 1 row", predict_only),
            ("parse V2 JSON + TelescoreRuntime.predict, 1 row", parse_and_predict),
        ):
            for _ in range(5):
                await call()
            durations = []
            deadline = time.perf_counter() + IN_PROCESS_SECONDS
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await call()
                durations.append((time.perf_counter() - started) * 1e6)
            results[label] = {
                "calls": len(durations),
                "median_us": statistics.median(durations),
                "p99_us": load_tools.percentile(durations, 99),
                "rows": 1,
                "per_row_us": statistics.median(durations),
            }
        await runtime.unload()
        return results

    return asyncio.run(run())


# -- servers --------------------------------------------------------------------------------------


def grpc_request(row: dict[str, Any]) -> Any:
    """Build the single-row ModelInferRequest once, as a gRPC client would."""
    from mlserver.grpc import dataplane_pb2 as pb

    from telescore.core.schema import CATEGORICAL_VALUES, FEATURES, INTEGER_FEATURES

    inputs = []
    for name in FEATURES:
        value = row[name]
        if name in CATEGORICAL_VALUES:
            datatype, contents = "BYTES", pb.InferTensorContents(bytes_contents=[value.encode()])
        elif name in INTEGER_FEATURES:
            datatype, contents = "INT64", pb.InferTensorContents(int64_contents=[value])
        else:
            datatype, contents = "FP64", pb.InferTensorContents(fp64_contents=[value])
        inputs.append(
            pb.ModelInferRequest.InferInputTensor(
                name=name, datatype=datatype, shape=[1], contents=contents
            )
        )
    return pb.ModelInferRequest(model_name="telemarketing", inputs=inputs)


def http_bodies(row: dict[str, Any]) -> dict[str, bytes]:
    """The same prospect in each server's own request format."""
    from telescore.io.serving_client import inference_request

    columns = list(row)

    def encode(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    return {
        PEER: encode({"rows": [row]}),
        MLFLOW_SERVE: encode(
            {"dataframe_split": {"columns": columns, "data": [[row[c] for c in columns]]}}
        ),
        "v2": encode(inference_request([row])),
    }


# -- measuring ------------------------------------------------------------------------------------


class PredictionCounter:
    """Counts documents in `predictions`, waiting for the prediction log to flush."""

    def __init__(self, uri: str) -> None:
        from telescore.io.prediction_store import PredictionStore

        self.store = PredictionStore(uri, PREDICTIONS_DATABASE, timeout_ms=10_000)
        self.store.open()

    def count(self) -> int:
        """Return the number of documents now, from the collection's metadata."""
        # count_documents scans: half a second at 20,000 documents on nx-27017.
        return int(self.store.collection.estimated_document_count())

    def settled(self, expected: int | None = None, timeout: float = 30.0) -> int:
        """Return the count once it stops moving (or reaches `expected` and stays there)."""
        deadline = time.monotonic() + timeout
        count = self.count()
        unchanged_since = time.monotonic()
        # The log flushes every 0.5 s: a count unchanged for 1.5 s (or at `expected` for a
        # flush interval) is settled.
        while time.monotonic() < deadline:
            quiet = time.monotonic() - unchanged_since
            if quiet >= 1.5 or (count == expected and quiet >= 0.6):
                break
            time.sleep(0.2)
            current = self.count()
            if current != count:
                count, unchanged_since = current, time.monotonic()
        return count

    def close(self) -> None:
        self.store.close()


async def _drive_target(
    target: Target, concurrency: int, seconds: float, warm_up: float
) -> tuple[list[load_tools.Sample], list[load_tools.Sample], float, CpuMeter]:
    """Warm up, then drive `target` with the asyncio client; return samples, time, CPU."""
    async with contextlib.AsyncExitStack() as exits:
        if target.kind == "http":
            client = await exits.enter_async_context(load_tools.http_client(concurrency))
            send = load_tools.http_sender(client, target.address, target.payload)
        else:
            import grpc
            from mlserver.grpc import dataplane_pb2_grpc

            channel = await exits.enter_async_context(grpc.aio.insecure_channel(target.address))
            stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)

            async def send() -> tuple[bool, str]:
                await stub.ModelInfer(target.payload, timeout=30)
                return True, ""

        warm, _ = await load_tools.drive(send, concurrency, warm_up)
        with CpuMeter(
            target.service.process.pid, _database_pid(target), client_is_child=False
        ) as meter:
            samples, wall = await load_tools.drive(send, concurrency, seconds)
    return warm, samples, wall, meter


def _database_pid(target: Target) -> int | None:
    return target.database.process.pid if target.database is not None else None


def measure_cell(
    target: Target,
    client: str,
    concurrency: int,
    seconds: float,
    warm_up: float,
    work_dir: Path,
    counter: PredictionCounter | None,
) -> dict[str, Any]:
    """Measure one cell (target, client, concurrency); check logged predictions if on."""
    # The previous check waited for the log to go quiet: a plain count is settled.
    before = counter.count() if counter else None
    if client == "wrk":
        with CpuMeter(
            target.service.process.pid, _database_pid(target), client_is_child=True
        ) as meter:
            figures, raw = load_tools.run_wrk(
                target.address, target.payload, concurrency, max(1, round(seconds)), work_dir
            )
        sent_ok = figures.requests - figures.errors
        errors_seen = [] if not figures.errors else [json.dumps(raw)]
    else:
        warm, samples, wall, meter = asyncio.run(
            _drive_target(target, concurrency, seconds, warm_up)
        )
        figures = load_tools.summarise(client, concurrency, samples, wall)
        sent_ok = sum(sample.ok for sample in warm + samples)
        errors_seen = sorted({s.detail for s in warm + samples if not s.ok})[:5]
    figures = replace(figures, server_cpu_seconds=meter.server)
    result = figures.as_dict() | {
        "client_cpu_seconds": meter.client,
        "database_cpu_seconds": meter.database,
        "other_cpu_seconds": meter.other,
        "error_samples": errors_seen,
    }
    if counter is not None and before is not None:
        after = counter.settled(expected=before + sent_ok)
        result["predictions_check"] = {
            "successful_requests": sent_ok,
            "documents_added": after - before,
            # wrk stops with requests in flight: the server answers and logs them unseen.
            "allowed_extra": concurrency if client == "wrk" else 0,
        }
    return result


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine one cell's rounds: sums for counts and times, means for wrk's percentiles."""
    if len(rounds) == 1:
        return dict(rounds[0])
    merged = dict(rounds[0])
    for key in (
        "seconds",
        "requests",
        "errors",
        "server_cpu_seconds",
        "client_cpu_seconds",
        "database_cpu_seconds",
        "other_cpu_seconds",
    ):
        merged[key] = sum(each[key] for each in rounds)
    for key in ("p50_ms", "p99_ms"):
        merged[key] = statistics.fmean(each[key] for each in rounds)
    merged["max_ms"] = max(each["max_ms"] for each in rounds)
    merged["throughput"] = (merged["requests"] - merged["errors"]) / merged["seconds"]
    merged["server_cpu_us_per_request"] = merged["server_cpu_seconds"] / merged["requests"] * 1e6
    merged["round_throughputs"] = [each["throughput"] for each in rounds]
    merged["error_samples"] = sorted({e for each in rounds for e in each["error_samples"]})[:5]
    return merged


def cell_name(client: str, concurrency: int) -> str:
    """Name a cell as it is printed: client and concurrency."""
    return f"{client} c={concurrency}"


def run_cells(
    targets: list[Target],
    args: argparse.Namespace,
    work_dir: Path,
    counter: PredictionCounter,
    log: Callable[[str], None],
) -> None:
    """Measure every (target, client) at c=1, then at c=16, in rounds of alternating order.

    Cells are ordered client by client, so that log off and log on are measured back to back;
    each round reverses the order, so neither always goes first on a machine whose background
    load drifts.
    """
    use_wrk = args.wrk and load_tools.wrk_available()
    cells = []
    for client in ("httpx", "grpc.aio", "wrk"):
        for target in targets:
            asyncio_client = "grpc.aio" if target.kind == "grpc" else "httpx"
            if client == asyncio_client or (client == "wrk" and use_wrk and target.kind == "http"):
                cells.append((target, client))
    warmed: set[tuple[str, str]] = set()

    def measure(target: Target, client: str, concurrency: int, seconds: float) -> None:
        # A full warm-up the first time; then only long enough to open the connections.
        warm_up = 0.1 if (target.key, client) in warmed else WARM_UP_SECONDS
        warmed.add((target.key, client))
        counts = counter if target.database is not None else None
        result = measure_cell(target, client, concurrency, seconds, warm_up, work_dir, counts)
        target.cells.setdefault(cell_name(client, concurrency), []).append(result)
        check = result.get("predictions_check")
        checked = (
            f", logged {check['documents_added']}/{check['successful_requests']}" if check else ""
        )
        log(
            f"  {target.label:42} {client:8} c={concurrency:<2} "
            f"{result['throughput']:7.0f} req/s  p50 {result['p50_ms']:7.2f} ms  "
            f"p99 {result['p99_ms']:7.2f} ms  errors {result['errors']}{checked}"
        )

    for concurrency, seconds, rounds in (
        (1, args.latency_seconds, args.latency_rounds),
        (HIGH_CONCURRENCY, args.seconds, args.rounds),
    ):
        for round_number in range(rounds):
            log(f"concurrency {concurrency}, round {round_number + 1} of {rounds}:")
            order = cells if round_number % 2 == 0 else list(reversed(cells))
            for target, client in order:
                if concurrency == 1 and target.lever:
                    continue
                measure(target, client, concurrency, seconds / rounds)


# -- report ---------------------------------------------------------------------------------------


def summarise_targets(targets: list[Target]) -> dict[str, dict[str, dict[str, Any]]]:
    """Return target key -> cell name -> merged figures."""
    return {
        target.key: {name: merge_rounds(rounds) for name, rounds in target.cells.items()}
        for target in targets
    }


def derive(figures: dict[str, dict[str, dict[str, Any]]], labels: dict[str, str]) -> dict[str, Any]:
    """Ratios against the peer, logging cost and the three targets."""

    def throughput(key: str, client: str) -> float | None:
        cell = figures.get(key, {}).get(cell_name(client, HIGH_CONCURRENCY))
        return cell["throughput"] if cell else None

    def p50(key: str, client: str) -> float | None:
        cell = figures.get(key, {}).get(cell_name(client, 1))
        return cell["p50_ms"] if cell else None

    ratios: dict[str, dict[str, float]] = {}
    for key in figures:
        for client in ("httpx", "wrk", "grpc.aio"):
            mine = throughput(key, client)
            # gRPC has no peer of its own: it is compared with the peer's REST via httpx.
            peer = throughput(PEER, "httpx" if client == "grpc.aio" else client)
            if mine is not None and peer:
                ratios.setdefault(key, {})[client] = mine / peer

    log_cost: dict[str, float] = {}
    for off, on, client in (
        (REST_OFF, REST_ON, "httpx"),
        (REST_OFF, REST_ON, "wrk"),
        (GRPC_OFF, GRPC_ON, "grpc.aio"),
    ):
        before, after = throughput(off, client), throughput(on, client)
        if before and after is not None:
            log_cost[f"{'REST' if off == REST_OFF else 'gRPC'} / {client}"] = 1 - after / before

    targets = []
    for key, client in ((REST_ON, "wrk"), (REST_ON, "httpx"), (GRPC_ON, "grpc.aio")):
        ratio = ratios.get(key, {}).get(client)
        if ratio is not None:
            peer_client = "httpx" if client == "grpc.aio" else client
            targets.append(
                {
                    "target": f">= {TARGET_SPEED_UP:.0f}x the FastAPI peer at c=16",
                    "measured": f"{labels[key]} via {client}: {ratio:.2f}x "
                    f"(peer via {peer_client})",
                    "meets": ratio >= TARGET_SPEED_UP,
                }
            )
    for key, client in ((REST_ON, "wrk"), (REST_ON, "httpx"), (GRPC_ON, "grpc.aio")):
        latency = p50(key, client)
        if latency is not None:
            targets.append(
                {
                    "target": f"single-row p50 < {TARGET_P50_MS:.0f} ms",
                    "measured": f"{labels[key]} via {client}: {latency:.2f} ms",
                    "meets": latency < TARGET_P50_MS,
                }
            )
    for name, cost in log_cost.items():
        targets.append(
            {
                "target": f"logging costs <= {TARGET_LOG_COST:.0%} of throughput",
                "measured": f"{name}: {cost:+.1%}",
                "meets": cost <= TARGET_LOG_COST,
            }
        )
    return {"ratios_vs_peer": ratios, "logging_cost": log_cost, "targets": targets}


def print_report(results: dict[str, Any]) -> None:
    """Print the in-process floor, the side-by-side table, ratios and targets."""
    print(f"\ntelescore serving benchmark: {results['machine']}")
    print(
        "Client and server share these cores, and other processes on the machine ran "
        "meanwhile: each row says how many cores the server, its MongoDB, the client and "
        "everything else used."
    )
    print("\nIn-process floor (no server), per call:")
    print(f"  {'':56}{'median µs':>11}{'p99 µs':>10}{'µs/row':>9}")
    for label, figures in results["in_process"]["calls"].items():
        print(
            f"  {label:56}{figures['median_us']:11.1f}{figures['p99_us']:10.1f}"
            f"{figures['per_row_us']:9.2f}"
        )
    print(
        f"  fast path recognised: {results['in_process']['fast_path_recognised']}; "
        f"max |fast - predict_proba| on 1,000 rows: "
        f"{results['in_process']['fast_vs_predict_proba_max_abs_difference']:.1e}"
    )

    figures, labels = results["figures"], results["labels"]
    derived = results["derived"]
    settings = results["settings"]
    print(
        f"\nSingle-row requests: latency at c=1 ({settings['latency_seconds']:.0f} s per cell in "
        f"{settings['latency_rounds']} rounds), throughput at c={HIGH_CONCURRENCY} "
        f"({settings['seconds']:.0f} s per cell in {settings['rounds']} rounds):"
    )
    header = (
        f"  {'server':42}{'client':9}{'p50 c=1':>8}{'p99 c=1':>8}{'req/s':>7}{'p50':>7}"
        f"{'p99':>7}{'vs peer':>8}{'srv µs/req':>11}  {'cores: srv':>10}{'db':>5}{'cli':>5}"
        f"{'other':>6}{'errors':>7}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for key, cells in figures.items():
        clients = sorted(
            {name.split(" c=")[0] for name in cells}, key=["httpx", "grpc.aio", "wrk"].index
        )
        for client in clients:
            low = cells.get(cell_name(client, 1))
            high = cells.get(cell_name(client, HIGH_CONCURRENCY))
            ratio = derived["ratios_vs_peer"].get(key, {}).get(client)

            def show(cell: dict[str, Any] | None, name: str, width: int, digits: int) -> str:
                return f"{cell[name]:{width}.{digits}f}" if cell else " " * (width - 1) + "-"

            cores = (
                (
                    f"{high['server_cpu_seconds'] / high['seconds']:12.2f}"
                    f"{high['database_cpu_seconds'] / high['seconds']:5.2f}"
                    f"{high['client_cpu_seconds'] / high['seconds']:5.2f}"
                    f"{high['other_cpu_seconds'] / high['seconds']:6.2f}"
                )
                if high
                else " " * 28
            )
            errors = sum(cell["errors"] for cell in cells.values() if cell["client"] == client)
            print(
                f"  {labels[key]:42}{client:9}{show(low, 'p50_ms', 8, 2)}"
                f"{show(low, 'p99_ms', 8, 2)}{show(high, 'throughput', 7, 0)}"
                f"{show(high, 'p50_ms', 7, 2)}{show(high, 'p99_ms', 7, 2)}"
                f"{(f'{ratio:7.2f}x' if ratio is not None else '       -')}"
                f"{show(high, 'server_cpu_us_per_request', 11, 0)}{cores}{errors:7d}"
            )
    print(
        "  (latencies in ms, c=16 p50/p99 are the mean of rounds; 'vs peer' = c=16 throughput / "
        "the FastAPI peer's with the same client, gRPC's against the peer via httpx; srv µs/req "
        "= server CPU per request at c=16; cores = CPU seconds / wall seconds at c=16: server, "
        "its MongoDB, the load client, every other process on the machine)"
    )

    print("\nPrediction logging cost (1 - on/off throughput at c=16; per round in brackets):")
    for name, cost in derived["logging_cost"].items():
        print(f"  {name:20}{cost:+7.1%}   {results['logging_cost_rounds'].get(name, '')}")

    check = results["predictions_check"]
    print(
        f"\nPrediction log (logging on): {check['documents']} documents in `predictions`, "
        f"{check['successful_requests']} successful requests sent to it "
        f"({check['exact_cells_matching']}/{check['exact_cells']} httpx/gRPC cells exact; "
        f"wrk cells: {check['wrk_extra']} extra documents from requests in flight when wrk "
        f"stopped, at most {check['wrk_allowed']} allowed)"
    )

    print("\nTargets (with prediction logging on):")
    for each in derived["targets"]:
        verdict = "meets " if each["meets"] else "misses"
        print(f"  {verdict}  {each['target']:40} {each['measured']}")


def logging_cost_rounds(figures: dict[str, Any], targets: list[Target]) -> dict[str, str]:
    """Per-round logging cost, to show how much the figure moves between rounds."""
    by_key = {target.key: target for target in targets}
    costs = {}
    for off, on, client, name in (
        (REST_OFF, REST_ON, "httpx", "REST / httpx"),
        (REST_OFF, REST_ON, "wrk", "REST / wrk"),
        (GRPC_OFF, GRPC_ON, "grpc.aio", "gRPC / grpc.aio"),
    ):
        cell = cell_name(client, HIGH_CONCURRENCY)
        if off not in by_key or on not in by_key or cell not in by_key[off].cells:
            continue
        pairs = zip(by_key[off].cells[cell], by_key[on].cells.get(cell, []), strict=False)
        costs[name] = (
            "[" + ", ".join(f"{1 - b['throughput'] / a['throughput']:+.1%}" for a, b in pairs) + "]"
        )
    return costs


def predictions_summary(targets: list[Target], documents: int) -> dict[str, Any]:
    """Add up the per-cell document checks of the logging-on server."""
    exact = matching = sent = wrk_extra = wrk_allowed = 0
    for target in targets:
        for name, rounds in target.cells.items():
            for result in rounds:
                check = result.get("predictions_check")
                if not check:
                    continue
                sent += check["successful_requests"]
                extra = check["documents_added"] - check["successful_requests"]
                if name.startswith("wrk"):
                    wrk_extra += extra
                    wrk_allowed += check["allowed_extra"]
                else:
                    exact += 1
                    matching += extra == 0
    return {
        "documents": documents,
        "successful_requests": sent,
        "exact_cells": exact,
        "exact_cells_matching": matching,
        "wrk_extra": wrk_extra,
        "wrk_allowed": wrk_allowed,
    }


def save_chart(results: dict[str, Any], path: Path) -> None:
    """Draw c=16 throughput and c=1 p50 latency per server, one bar per client."""
    import matplotlib

    matplotlib.use("Agg")  # Files only: benchmarks run headless.
    import matplotlib.pyplot as plt

    figures, labels = results["figures"], results["labels"]
    keys = list(figures)
    clients = ["httpx", "grpc.aio", "wrk"]
    colours = {"httpx": "#4c72b0", "grpc.aio": "#8172b2", "wrk": "#55a868"}
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 0.55 * len(keys) + 2.2), sharey=True)
    height = 0.38
    for panel, concurrency, value, title in (
        (left, HIGH_CONCURRENCY, "throughput", f"throughput at c={HIGH_CONCURRENCY} (req/s)"),
        (right, 1, "p50_ms", "single-row p50 latency at c=1 (ms)"),
    ):
        drawn: set[str] = set()
        for row, key in enumerate(keys):
            present = [c for c in clients if cell_name(c, concurrency) in figures[key]]
            for slot, client in enumerate(present):
                amount = figures[key][cell_name(client, concurrency)][value]
                offset = (slot - (len(present) - 1) / 2) * height
                panel.barh(
                    row + offset,
                    amount,
                    height=height,
                    color=colours[client],
                    label=None if client in drawn else client,
                )
                panel.text(
                    amount,
                    row + offset,
                    f" {amount:.0f}" if value == "throughput" else f" {amount:.2f}",
                    va="center",
                    fontsize=7,
                )
                drawn.add(client)
        panel.set_title(title)
        panel.legend(loc="lower right", fontsize=8)
    right.axvline(TARGET_P50_MS, color="#c44e52", linestyle="--", linewidth=1)
    right.text(
        TARGET_P50_MS, -0.6, f" target < {TARGET_P50_MS:.0f} ms", color="#c44e52", fontsize=8
    )
    left.set_yticks(range(len(keys)), [labels[key] for key in keys])
    left.invert_yaxis()
    figure.suptitle(
        f"Serving the same model, single-row requests, {results['machine_short']}", fontsize=10
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


# -- main -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def running(services: dict[str, Any]) -> Iterator[dict[str, float]]:
    """Start services in parallel; stop every one of them on the way out, whatever happens."""
    with contextlib.ExitStack() as exits:
        started = time.perf_counter()
        for service in services.values():
            exits.callback(service.stop)
            service.launch()
        ready = {}
        for name, service in services.items():
            service.wait_healthy()
            ready[name] = time.perf_counter() - started
        yield ready


def define_services(
    state_dir: Path, tracking_uri: str, model_uri: str, row: dict[str, Any], args: Any
) -> tuple[dict[str, Any], list[Target], str]:
    """Return the services to start (by name), the targets they serve, and the MongoDB URI."""
    mongodb, mongodb_uri = stack.mongodb_service(state_dir)
    peer, peer_url = stack.fastapi_peer_service(state_dir, tracking_uri, model_uri)
    mlflow_serve, mlflow_serve_url = stack.mlflow_serve_service(state_dir, tracking_uri, model_uri)
    off = {"prediction_log": False}
    on = {
        "prediction_log": True,
        "mongodb_uri": mongodb_uri,
        "mongodb_database": PREDICTIONS_DATABASE,
    }
    log_off = stack.mlserver_service(state_dir, "mlserver-log-off", tracking_uri, off)
    log_on = stack.mlserver_service(state_dir, "mlserver-log-on", tracking_uri, on)
    bodies = http_bodies(row)
    infer = "/v2/models/telemarketing/infer"
    grpc_payload = grpc_request(row)
    targets = [
        Target(
            PEER, "FastAPI + scikit-learn (peer)", "http", f"{peer_url}/predict", bodies[PEER], peer
        ),
        Target(
            MLFLOW_SERVE,
            "mlflow models serve",
            "http",
            f"{mlflow_serve_url}/invocations",
            bodies[MLFLOW_SERVE],
            mlflow_serve,
        ),
        Target(
            REST_OFF,
            "telescore REST, log off",
            "http",
            log_off.rest_url + infer,
            bodies["v2"],
            log_off.process,
        ),
        Target(
            REST_ON,
            "telescore REST, log on",
            "http",
            log_on.rest_url + infer,
            bodies["v2"],
            log_on.process,
            database=mongodb,
        ),
        Target(
            GRPC_OFF,
            "telescore gRPC, log off",
            "grpc",
            log_off.grpc_target,
            grpc_payload,
            log_off.process,
        ),
        Target(
            GRPC_ON,
            "telescore gRPC, log on",
            "grpc",
            log_on.grpc_target,
            grpc_payload,
            log_on.process,
            database=mongodb,
        ),
    ]
    services = {
        "nx-27017": mongodb,
        "FastAPI peer": peer,
        "mlflow models serve": mlflow_serve,
        "MLServer, log off": log_off.process,
        "MLServer, log on": log_on.process,
    }
    levers = []
    if args.workers_lever:
        levers.append((REST_WORKERS, "parallel_workers=1", {"parallel_workers": 1}))
    if args.access_log_lever:
        levers.append((REST_ACCESS_LOG, "access_log=True", {"access_log": True}))
    for key, name, server in levers:
        lever = stack.mlserver_service(state_dir, f"mlserver-{key}", tracking_uri, off, server)
        services[f"MLServer, {name}"] = lever.process
        targets.append(
            Target(
                key,
                f"lever: REST, log off, {name}",
                "http",
                lever.rest_url + infer,
                bodies["v2"],
                lever.process,
                lever=True,
            )
        )
    return services, targets, mongodb_uri


def parse_arguments() -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="Per cell at c=16 (total).")
    parser.add_argument("--rounds", type=int, default=4, help="Rounds the c=16 time is split in.")
    parser.add_argument(
        "--latency-seconds", type=float, default=3.0, help="Per cell at c=1 (total)."
    )
    parser.add_argument(
        "--latency-rounds", type=int, default=2, help="Rounds the c=1 time is split in."
    )
    parser.add_argument("--no-wrk", dest="wrk", action="store_false", help="Python clients only.")
    parser.add_argument(
        "--no-workers-lever",
        dest="workers_lever",
        action="store_false",
        help="Skip the MLServer with parallel_workers=1.",
    )
    parser.add_argument(
        "--access-log-lever",
        action="store_true",
        help="Also measure an MLServer with access_log=True (about 25 s more).",
    )
    return parser.parse_args()


def main() -> None:
    """Register the model, start the servers, measure, print, write JSON and PNG."""
    args = parse_arguments()
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", flush=True)

    if args.wrk and not load_tools.wrk_available():
        log("wrk not found (apt-get install -y wrk): measuring with the Python clients only")
    with (
        stack.stop_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="telescore-serving-bench-") as temp,
    ):
        state_dir = Path(temp)
        mlflow_server, tracking_uri = stack.mlflow_service(state_dir)
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        with mlflow_server.running():
            log(f"MLflow server up at {tracking_uri}")
            features, labels_ = stack.load_features()
            registered = stack.register_version(tracking_uri, features, labels_)
            stack.set_champion(tracking_uri, registered.version)
            model_uri = f"models:/{stack.REGISTERED_MODEL}/{registered.version}"
            log(
                f"registered {model_uri} as champion (fit {registered.fit_seconds:.1f} s on "
                f"{len(features):,} rows)"
            )
            row = stack.prospect(features)
            in_process = measure_in_process(registered.pipeline, features, row)
            in_process["calls"] |= measure_runtime_in_process(http_bodies(row)["v2"])
            log("in-process floor measured")
            services, targets, mongodb_uri = define_services(
                state_dir, tracking_uri, model_uri, row, args
            )
            log(f"starting {len(services)} services in parallel: {', '.join(services)}")
            with running(services) as startup:
                background = background_cores()
                log(f"all healthy; other processes keep {background:.2f} cores busy at idle")
                counter = PredictionCounter(mongodb_uri)
                try:
                    run_cells(targets, args, state_dir, counter, log)
                    counter.settled()
                    documents = counter.store.count()  # count_documents: exact, once
                finally:
                    counter.close()
            log("servers stopped")

    figures = summarise_targets(targets)
    labels = {target.key: target.label for target in targets}
    results = {
        "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), Python "
        f"{platform.python_version()}; other processes busy {background:.2f} cores at idle, "
        f"load average at the end {', '.join(f'{v:.1f}' for v in os.getloadavg())}",
        "machine_short": f"{os.cpu_count()} CPUs shared by client, servers and other work",
        "background_cores": background,
        "versions": {
            name: version(name)
            for name in (
                "mlflow",
                "mlserver",
                "fastapi",
                "uvicorn",
                "scikit-learn",
                "httpx",
                "grpcio",
            )
        },
        "settings": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "latency_seconds": args.latency_seconds,
            "latency_rounds": args.latency_rounds,
            "warm_up_seconds": WARM_UP_SECONDS,
            "wrk": args.wrk and load_tools.wrk_available(),
            "omp_num_threads": stack.SERVER_ENV["OMP_NUM_THREADS"],
        },
        "model": {"uri": model_uri, "fit_seconds": registered.fit_seconds, "row": row},
        "startup_seconds": startup,
        "in_process": in_process,
        "labels": labels,
        "figures": figures,
        "rounds": {target.key: target.cells for target in targets},
        "logging_cost_rounds": logging_cost_rounds(figures, targets),
        "predictions_check": predictions_summary(targets, documents),
        "total_seconds": time.perf_counter() - started,
    }
    results["derived"] = derive(figures, labels)
    print_report(results)
    stack.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = stack.RESULTS_DIR / "serving.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    save_chart(results, stack.RESULTS_DIR / "serving.png")
    log(f"wrote {json_path} and {stack.RESULTS_DIR / 'serving.png'}")


if __name__ == "__main__":
    main()
