"""Where gRPC's logging cost comes from: the log's code in MLServer, or MongoDB beside it.

Three MLServers serve the same champion. Each round drives gRPC (grpc.aio, c=16) at each,
back to back:

- off: no prediction log;
- on, spooling: the log on, with MongoDB unreachable, so its writer appends every row to the
  local spool. MLServer does exactly the work it does with the log on, and no MongoDB runs;
- on: the log on, written to nx-27017 on this machine.

For each it prints throughput, MLServer's CPU per request (main thread and the rest) and the
CPU per request of its writer process. The gap between "on, spooling" and "on" is what the
MongoDB server costs by sharing the machine; the gap between "off" and "on, spooling" bounds
what the log costs MLServer itself. Prints figures, asserts nothing.

    .venv/bin/python -m benchmarks.grpc_logging_cost [--rounds 5] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import psutil

from benchmarks import load
from benchmarks import serving_stack as stack
from benchmarks.serving import grpc_request

CONCURRENCY = 16
SETUPS = ("off", "on, spooling", "on")
# Nothing listens on the discard port: the writer cannot connect and spools every row.
UNREACHABLE_MONGODB = "mongodb://127.0.0.1:9"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the three set-ups")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per set-up per round")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {setup: [] for setup in SETUPS}
    with tempfile.TemporaryDirectory(prefix="telescore-grpc-logging-") as temp:
        state = Path(temp)
        with stack.registered_champion(state) as (tracking_uri, features):
            pair = stack.logging_pair(state, tracking_uri)
            spooling = stack.mlserver_service(
                state,
                "spooling",
                tracking_uri,
                {"prediction_log": True, "mongodb_uri": UNREACHABLE_MONGODB},
            )
            servers = {"off": pair.off, "on, spooling": spooling, "on": pair.on}
            payload = grpc_request(stack.prospect(features))
            with (
                pair.mongodb.running(),
                pair.off.process.running(),
                spooling.process.running(),
                pair.on.process.running(),
            ):
                for index in range(args.rounds):
                    for setup in SETUPS:
                        rate = _measure(index, setup, servers[setup], payload, args.seconds)
                        rates[setup].append(rate)
    _print_summary(rates)


def _measure(
    index: int,
    setup: str,
    served: stack.MLServerService,
    payload: Any,
    seconds: float,
) -> float:
    """Drive one set-up for `seconds`; print its figures and return its throughput."""
    pid = served.process.process.pid
    threads_before, children_before = _thread_cpu(pid), _children_cpu(pid)
    requests, wall = asyncio.run(_drive(served.grpc_target, payload, seconds))
    threads_after, children_after = _thread_cpu(pid), _children_cpu(pid)
    spent = {tid: cpu - threads_before.get(tid, 0.0) for tid, cpu in threads_after.items()}
    per_request = 1e6 / max(requests, 1)
    main_thread = spent.get(pid, 0.0) * per_request
    other_threads = (sum(spent.values()) - spent.get(pid, 0.0)) * per_request
    writer = (children_after - children_before) * per_request
    print(
        f"round {index} {setup:<12}: {requests / wall:6.0f} req/s | MLServer CPU per request: "
        f"main thread {main_thread:5.0f} us, other threads {other_threads:4.0f} us, "
        f"writer {writer:3.0f} us",
        flush=True,
    )
    return requests / wall


async def _drive(target: str, payload: Any, seconds: float) -> tuple[int, float]:
    import grpc
    from mlserver.grpc import dataplane_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def send() -> tuple[bool, str]:
            await stub.ModelInfer(payload, timeout=30)
            return True, ""

        await load.drive(send, CONCURRENCY, 1.0)  # warm-up
        samples, wall = await load.drive(send, CONCURRENCY, seconds)
    return sum(sample.ok for sample in samples), wall


def _thread_cpu(pid: int) -> dict[int, float]:
    """User+system CPU seconds of each thread of `pid`, by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    spent = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue  # the thread ended
        spent[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return spent


def _children_cpu(pid: int) -> float:
    total = 0.0
    for child in psutil.Process(pid).children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _print_summary(rates: dict[str, list[float]]) -> None:
    def cost(setup: str) -> list[float]:
        return sorted(
            1 - rate / base for rate, base in zip(rates[setup], rates["off"], strict=True)
        )

    for setup in SETUPS[1:]:
        costs = cost(setup)
        print(
            f"throughput cost of {setup!r} against 'off', median of {len(costs)} rounds: "
            f"{statistics.median(costs):+.1%} (spread {costs[0]:+.1%} to {costs[-1]:+.1%})"
        )


if __name__ == "__main__":
    main()
