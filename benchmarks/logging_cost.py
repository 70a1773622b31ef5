"""Where the CPU of prediction logging goes: telescore's own process vs the MongoDB server.

Builds and submits single-row prediction records through `PredictionLog` into an embedded
nx-27017, the way `TelescoreRuntime` does per request, and prints the CPU time per record spent
in this process (building records on the request path, the background writer) next to the CPU
the MongoDB server spends. On one 2-core machine both share the cores; in production MongoDB
runs elsewhere. Prints figures, asserts nothing.

    .venv/bin/python -m benchmarks.logging_cost [--records 6000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psutil
from prometheus_client import CollectorRegistry

from telescore.core.predictions import prediction_records
from telescore.core.schema import FEATURES
from telescore.io.prediction_store import PredictionStore
from telescore.services.embedded import mongodb_server
from telescore.services.processes import free_port
from telescore.serving.prediction_log import PredictionLog

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=6000, help="single-row records to log")
    records = parser.parse_args().records
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


if __name__ == "__main__":
    main()
