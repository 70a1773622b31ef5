"""Where the cost of prediction logging goes: telescore's own process vs the MongoDB server.

1. CPU split: builds and submits single-row records through `PredictionLog` into nx-27017, as
   the writer process does, and prints the CPU per record spent by the writer next to the CPU
   the MongoDB server spends.
2. Paired throughput: two MLServers serving the same champion, one logging and one not, share
   the machine with MongoDB and wrk; wrk at c=16 alternates between them, round after round.
   Needs `wrk` (apt-get install -y wrk); skipped without it.

Prints figures, asserts nothing.

    .venv/bin/python -m benchmarks.logging_cost [--records 6000] [--seconds 6] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    parser.add_argument("--seconds", type=int, default=6, help="wrk seconds per server per round")
    parser.add_argument("--rounds", type=int, default=7, help="paired off/on rounds")
    args = parser.parse_args()
    cpu_split(args.records)
    if load.wrk_available():
        paired_throughput(args.seconds, args.rounds)
    else:
        print("wrk missing (apt-get install -y wrk): paired throughput skipped")


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
    print(f"{'writer process: build documents':<48}{building * per:>13.0f} us")
    print(f"{'writer process: buffer, encode, insert_many':<48}{(ours - building) * per:>13.0f} us")
    print(f"{'writer process, total':<48}{ours * per:>13.0f} us")
    print(f"{'MongoDB server (nx-27017, same machine)':<48}{server_cpu * per:>13.0f} us")
    print(f"server share of logging CPU: {server_cpu / (server_cpu + ours):.0%}")


def paired_throughput(seconds: int, rounds: int) -> None:
    """Print MLServer's c=16 throughput with the log off and on, in alternating paired rounds.

    Both servers run at once (an idle one costs nothing) and share the two cores with MongoDB
    and wrk, as on one host. This machine's speed drifts by tens of percent between runs, so
    each round measures off then on back to back and the cost is the median of the rounds.
    """
    with tempfile.TemporaryDirectory(prefix="telescore-logging-paired-") as temp:
        state = Path(temp)
        with stack.registered_champion(state) as (tracking_uri, features):
            pair = stack.logging_pair(state, tracking_uri)
            off, on = pair.off, pair.on
            body = json.dumps(inference_request([stack.prospect(features)])).encode()
            with (
                pair.mongodb.running(),
                off.process.running(),
                on.process.running(),
                PredictionStore(pair.mongodb_uri, "bench") as store,
            ):
                rounds_figures = [
                    _paired_round(index, off, on, body, seconds, state, store)
                    for index in range(rounds)
                ]
    costs = sorted(figures[0] for figures in rounds_figures)
    cpu_off = statistics.median(figures[1] for figures in rounds_figures)
    cpu_on = statistics.median(figures[2] for figures in rounds_figures)
    print(
        f"logging cost (1 - on/off throughput), median of {rounds} paired rounds: "
        f"{statistics.median(costs):+.1%} (spread {costs[0]:+.1%} to {costs[-1]:+.1%}; "
        "target <= 5%)"
    )
    print(
        f"MLServer's own CPU per request, median: {cpu_off:.0f} us log off, {cpu_on:.0f} us log on "
        f"({cpu_on / cpu_off - 1:+.1%})"
    )


def _paired_round(
    index: int,
    off: stack.MLServerService,
    on: stack.MLServerService,
    body: bytes,
    seconds: int,
    state: Path,
    store: PredictionStore,
) -> tuple[float, float, float]:
    """Run wrk at c=16 on the server without, then with, the log.

    Returns the throughput cost and each server's own CPU per request (µs; the MLServer
    process alone, not its writer processes, which run beside it like MongoDB does).
    """
    rates, cpu = [], []
    for mode, served in (("off", off), ("on", on)):
        url = f"{served.rest_url}/v2/models/telemarketing/infer"
        server = psutil.Process(served.process.process.pid)
        load.run_wrk(url, body, 16, 1, state)  # warm-up
        before, cpu_before = store.collection.estimated_document_count(), _cpu(server)
        figures, _ = load.run_wrk(url, body, 16, seconds, state)
        answered = figures.requests - figures.errors
        cpu.append((_cpu(server) - cpu_before) / max(answered, 1) * 1e6)
        rows = store.collection.estimated_document_count() - before
        rates.append(answered / figures.seconds)
        print(
            f"round {index} log {mode:<3}: {rates[-1]:7.0f} req/s, p50 {figures.p50_ms:.2f} ms, "
            f"server CPU {cpu[-1]:5.0f} us/request, {figures.errors} errors, {rows} rows logged"
        )
    return 1 - rates[1] / rates[0], cpu[0], cpu[1]


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


if __name__ == "__main__":
    main()
