"""Where the cost of prediction logging goes: telescore's own process vs the MongoDB server.

1. CPU split: builds and submits single-row records through `PredictionLog` into nx-27017, the
   way `TelescoreRuntime` does per request, and prints the CPU per record spent in this process
   next to the CPU the MongoDB server spends.
2. Isolated throughput: MLServer pinned to core 0, the MongoDB server and wrk to core 1 (as if
   MongoDB ran on its own host), wrk at c=16 with the log off and on, twice each, alternating.
   Needs `taskset` and `wrk` (apt-get install -y wrk); skipped without them.

Prints figures, asserts nothing.

    .venv/bin/python -m benchmarks.logging_cost [--records 6000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psutil
from prometheus_client import CollectorRegistry

from benchmarks import load
from benchmarks import serving_stack as stack
from telescore.core.predictions import prediction_records
from telescore.core.schema import FEATURES
from telescore.io.prediction_store import PredictionStore
from telescore.io.serving_client import inference_request
from telescore.services.embedded import mongodb_server
from telescore.services.processes import free_port
from telescore.serving.prediction_log import PredictionLog

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=6000, help="single-row records to log")
    parser.add_argument("--seconds", type=int, default=8, help="wrk seconds per isolated cell")
    args = parser.parse_args()
    cpu_split(args.records)
    if shutil.which("taskset") and load.wrk_available():
        isolated_throughput(args.seconds)
    else:
        print("taskset or wrk missing: isolated throughput skipped")


def cpu_split(records: int) -> None:
    """Print the CPU per logged record in this process and in the MongoDB server."""
    data = pd.read_csv(PROJECT_ROOT / "data" / "bank-additional-full.csv.gz", sep=";")
    row = {str(k): v for k, v in data.tail(1)[list(FEATURES)].to_dict(orient="records")[0].items()}

    with tempfile.TemporaryDirectory(prefix="telescore-logging-cost-") as temp:
        state, port = Path(temp), free_port()
        with mongodb_server(state, port).running() as server:
            if server.process is None:
                raise SystemExit("nx-27017 did not start")
            mongodb = psutil.Process(server.process.pid)
            uri = f"mongodb://127.0.0.1:{port}"
            log = PredictionLog(
                lambda: PredictionStore(uri, "bench"), state / "spool", registry=CollectorRegistry()
            )
            log.start()
            ours_before, server_before = time.process_time(), sum(mongodb.cpu_times()[:2])
            started, building = time.perf_counter(), 0.0
            for index in range(records):
                built = time.perf_counter()
                batch = prediction_records(
                    f"bench-{index}",
                    "telemarketing",
                    "1",
                    "champion",
                    [row],
                    [0.3],
                    0.5,
                    [[]],
                    datetime.now(UTC),
                )
                building += time.perf_counter() - built
                log.submit(batch)
            with PredictionStore(uri, "bench") as store:
                # estimated_document_count: count_documents is slow on nx-27017 at this size.
                while store.collection.estimated_document_count() < records:
                    time.sleep(0.05)
            wall = time.perf_counter() - started
            ours = time.process_time() - ours_before
            server_cpu = sum(mongodb.cpu_times()[:2]) - server_before
            log.close()

    per = 1e6 / records
    print(f"{records} single-row records logged in {wall:.1f} s ({records / wall:.0f}/s)")
    print(f"{'where':<48}{'CPU per record':>16}")
    print(f"{'telescore: build records (request path)':<48}{building * per:>13.0f} us")
    print(f"{'telescore: submit + background writer':<48}{(ours - building) * per:>13.0f} us")
    print(f"{'telescore process, total':<48}{ours * per:>13.0f} us")
    print(f"{'MongoDB server (nx-27017, same machine)':<48}{server_cpu * per:>13.0f} us")
    print(f"server share of logging CPU: {server_cpu / (server_cpu + ours):.0%}")


def _pinned(service: object, cpus: str) -> None:
    """Prefix a ServiceProcess command with taskset so that it runs on `cpus` only."""
    service.command = ["taskset", "-c", cpus, *service.command]  # type: ignore[attr-defined]


def isolated_throughput(seconds: int) -> None:
    """Print MLServer's c=16 throughput with the log off and on, MongoDB kept off its core."""
    with tempfile.TemporaryDirectory(prefix="telescore-logging-pinned-") as temp:
        state = Path(temp)
        mlflow_server, tracking_uri = stack.mlflow_service(state)
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        with mlflow_server.running():
            features, labels = stack.load_features()
            stack.set_champion(
                tracking_uri, stack.register_version(tracking_uri, features, labels).version
            )
            mongodb, mongodb_uri = stack.mongodb_service(state)
            _pinned(mongodb, "1")
            with mongodb.running(), PredictionStore(mongodb_uri, "bench") as store:
                body = json.dumps(inference_request([stack.prospect(features)])).encode()
                rates: dict[str, list[float]] = {"off": [], "on": []}
                for round_index, mode in enumerate(["off", "on", "on", "off"]):
                    runtime: dict[str, object] = {"prediction_log": mode == "on"}
                    if mode == "on":
                        runtime |= {"mongodb_uri": mongodb_uri, "mongodb_database": "bench"}
                    served = stack.mlserver_service(
                        state, f"{mode}-{round_index}", tracking_uri, runtime
                    )
                    _pinned(served.process, "0")
                    with served.process.running():
                        url = f"{served.rest_url}/v2/models/telemarketing/infer"
                        load.run_wrk(url, body, 16, 2, state)  # warm-up
                        before = store.collection.estimated_document_count()
                        command = [
                            "taskset",
                            "-c",
                            "1",
                            *load.wrk_command(url, body, 16, seconds, state),
                        ]
                        output = subprocess.run(command, capture_output=True, text=True, check=True)
                        figures, _ = load.parse_wrk(output.stdout, 16)
                    logged = store.collection.estimated_document_count() - before
                    rate = (figures.requests - figures.errors) / figures.seconds
                    rates[mode].append(rate)
                    print(
                        f"log {mode:<3} round {round_index}: {rate:7.0f} req/s, p50 "
                        f"{figures.p50_ms:.2f} ms, {figures.errors} errors, {logged} rows logged"
                    )
    off, on = sum(rates["off"]), sum(rates["on"])
    print(f"isolated logging cost (1 - on/off throughput): {1 - on / off:+.1%} (target <= 5%)")


if __name__ == "__main__":
    main()
