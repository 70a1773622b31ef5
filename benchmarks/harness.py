"""What every benchmark shares: a CPU meter, load drivers and paired rounds.

- `CpuMeter`: CPU seconds of named parties (process groups read from /proc, narrowed by command
  line), of this process with its reaped children (the load client), and of the rest of the
  machine (/proc/stat): every figure comes with who used the cores meanwhile.
- Load: closed-loop asyncio workers over httpx or grpc.aio, every request recorded (callers
  slice by time), and `wrk` with a Lua POST script (one thread, a few % of a core).
- `run_rounds`, `paired`: arms run once per round, in reverse order every other round, and a
  comparison is the median of per-round ratios with its spread: this machine drifts by tens
  of percent between cells, so only paired, repeated figures mean much.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
TICKS = os.sysconf("SC_CLK_TCK")

# -- CPU ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    """Processes counted together: one process group, with or without those whose command
    line holds `only` / `without`."""

    group: int
    only: str = ""
    without: str = ""

    def counts(self, pid: int, group: int) -> bool:
        if group != self.group:
            return False
        if not self.only and not self.without:
            return True
        command = _command_line(pid)
        return self.only in command and not (self.without and self.without in command)


@cache
def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _processes() -> list[tuple[int, int, float]]:
    """Return (pid, process group, CPU seconds) of every live process."""
    found = []
    for folder in Path("/proc").iterdir():
        if not folder.name.isdigit():
            continue
        try:
            text = (folder / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        # After "pid (comm) ": state ppid pgrp ...; utime and stime are fields 14 and 15.
        fields = text.rsplit(") ", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICKS
        found.append((int(folder.name), int(fields[2]), cpu))
    return found


def machine_busy_seconds() -> float:
    """CPU seconds all processes have used since boot (user, nice, system, irq, softirq)."""
    with Path("/proc/stat").open() as stat:
        values = [int(value) for value in stat.readline().split()[1:8]]
    # Idle, iowait and steal (the hypervisor's) are nobody's work here.
    return (sum(values) - values[3] - values[4]) / TICKS


def own_cpu_seconds() -> float:
    """CPU seconds of this process and the children it has reaped (wrk, once it exits)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


@dataclass(frozen=True)
class Usage:
    """CPU seconds each party used over `wall` seconds; "client" and "other" always present."""

    wall: float
    seconds: dict[str, float]

    def cores(self) -> dict[str, float]:
        return {name: value / self.wall for name, value in self.seconds.items()}

    def per_request_us(self, name: str, requests: int) -> float:
        return self.seconds.get(name, 0.0) / max(requests, 1) * 1e6


class CpuMeter:
    """Reads the CPU of named parties, this process (the client) and the rest of the machine."""

    def __init__(self, parties: Mapping[str, Party] | None = None) -> None:
        self.parties = dict(parties or {})

    def read(self) -> tuple[float, dict[str, float]]:
        """Return a reading: wall time and cumulative CPU seconds per party."""
        totals = dict.fromkeys(self.parties, 0.0)
        if self.parties:
            for pid, group, seconds in _processes():
                for name, party in self.parties.items():
                    if party.counts(pid, group):
                        totals[name] += seconds
        totals["client"] = own_cpu_seconds()
        totals["machine"] = machine_busy_seconds()
        return time.perf_counter(), totals

    def since(self, start: tuple[float, dict[str, float]]) -> Usage:
        """Return what was used between `start` and now."""
        return usage_between(start, self.read())


def usage_between(
    start: tuple[float, dict[str, float]], end: tuple[float, dict[str, float]]
) -> Usage:
    """Return the CPU used between two readings of one meter."""
    spent = {name: max(0.0, end[1][name] - start[1][name]) for name in start[1]}
    machine = spent.pop("machine")
    spent["other"] = max(0.0, machine - sum(spent.values()))
    return Usage(max(end[0] - start[0], 1e-9), spent)


def idle_cores(seconds: float = 2.0) -> float:
    """Return the cores the machine keeps busy while the benchmark does nothing."""
    meter = CpuMeter()
    start = meter.read()
    time.sleep(seconds)
    usage = meter.since(start)
    return usage.seconds["other"] / usage.wall


# -- load -----------------------------------------------------------------------------------------

Send = Callable[[], Awaitable[tuple[bool, str]]]
"""One request: (succeeded, detail), detail being an error text or what `read` returned."""


@dataclass(frozen=True)
class Target:
    """Where to send single-row requests, and whose CPU to count while doing it."""

    label: str
    kind: str
    """"http" (POST `payload` bytes to the URL `address`) or "grpc" (ModelInfer to host:port)."""
    address: str
    payload: Any
    parties: Mapping[str, Party]
    settle: Callable[[], dict[str, float]] | None = None
    """Waits for the work a cell leaves behind (the log's shipping); returns figures on it."""


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it (perf_counter seconds)."""

    start: float
    end: float
    ok: bool
    detail: str = ""

    @property
    def latency_ms(self) -> float:
        return (self.end - self.start) * 1000.0


@dataclass(frozen=True)
class Figures:
    """One measured cell: requests (failed ones included) and client-side latency."""

    client: str
    concurrency: int
    seconds: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float = math.nan

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Cell:
    """Figures of one cell with the CPU every party used during it and, for a target that
    settles, until it had settled."""

    figures: Figures
    usage: Usage
    settled: Usage | None = None
    after: dict[str, float] = field(default_factory=dict)
    """What the target's `settle` returned."""

    def cpu_us(self, party: str, settled: bool = True) -> float:
        """A party's CPU per request; with `settled`, the work left after the cell included."""
        usage = self.settled if settled and self.settled else self.usage
        return usage.per_request_us(party, self.figures.requests)

    def as_dict(self) -> dict[str, Any]:
        cpu = {name: self.cpu_us(name) for name in self.usage.seconds}
        return asdict(self.figures) | {
            "throughput": self.figures.throughput,
            "cores": self.usage.cores(),
            "cpu_us_per_request": cpu,
            "after": self.after,
        }


def percentile(values: Sequence[float], share: float) -> float:
    """Return the nearest-rank percentile (share in 0..100); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share / 100.0 * len(ordered))) - 1]


def summarise(client: str, concurrency: int, samples: Sequence[Sample], seconds: float) -> Figures:
    """Summarise samples collected over `seconds` of wall time."""
    latencies = [sample.latency_ms for sample in samples]
    errors = sum(not sample.ok for sample in samples)
    quantiles = percentile(latencies, 50), percentile(latencies, 99), max(latencies, default=0)
    return Figures(client, concurrency, seconds, len(samples), errors, *quantiles)


async def drive(send: Send, concurrency: int, seconds: float) -> tuple[list[Sample], float]:
    """Run `concurrency` closed-loop workers for `seconds`; return every sample and the wall."""
    samples: list[Sample] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            begun = time.perf_counter()
            try:
                ok, detail = await send()
            except Exception as error:  # a failed request is a result, not a crash
                ok, detail = False, f"{type(error).__name__}: {error}"[:300]
            samples.append(Sample(begun, time.perf_counter(), ok, detail))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


@contextlib.asynccontextmanager
async def sender(
    target: Target, concurrency: int, read: Callable[[Any], str] | None = None
) -> AsyncIterator[Send]:
    """Yield a Send for `target`; `read` turns a successful response into the detail."""
    if target.kind == "grpc":
        import grpc
        from mlserver.grpc import dataplane_pb2_grpc

        async with grpc.aio.insecure_channel(target.address) as channel:
            stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)

            async def send_grpc() -> tuple[bool, str]:
                response = await stub.ModelInfer(target.payload, timeout=30)
                return True, read(response) if read else ""

            yield send_grpc
        return
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0)) as client:

        async def send_http() -> tuple[bool, str]:
            response = await client.post(target.address, content=target.payload, headers=headers)
            if response.is_success:
                return True, read(response) if read else ""
            return False, f"HTTP {response.status_code}: {response.text[:200]}"

        yield send_http


def warm(target: Target, seconds: float = 0.5) -> None:
    """Open connections and pay first-request costs before anything is measured."""

    async def run() -> None:
        async with sender(target, 4) as send:
            await drive(send, 4, seconds)

    asyncio.run(run())


def measure(target: Target, client: str, concurrency: int, seconds: float) -> Cell:
    """Drive `target` with `client` ("wrk", "httpx" or "grpc.aio"), meter every party, then
    wait for the target to settle, so that no later cell pays for this one's leftovers."""
    meter = CpuMeter(target.parties)

    async def run() -> tuple[Any, Figures, Usage]:
        async with sender(target, concurrency) as send:
            start = meter.read()
            samples, wall = await drive(send, concurrency, seconds)
            return start, summarise(client, concurrency, samples, wall), meter.since(start)

    if client == "wrk":
        start = meter.read()
        figures = run_wrk(target.address, target.payload, concurrency, seconds)
        usage = meter.since(start)
    else:
        start, figures, usage = asyncio.run(run())
    if target.settle is None:
        return Cell(figures, usage)
    after = target.settle()
    return Cell(figures, usage, meter.since(start), after)


# -- wrk ------------------------------------------------------------------------------------------

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {{"requests": %d, "duration_us": %d, "non_2xx": %d, "sockets": %d, '
    .. '"p50_us": %d, "p99_us": %d, "max_us": %d}}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def wrk_available() -> bool:
    """Tell whether the `wrk` binary is on PATH (apt-get install -y wrk)."""
    return shutil.which("wrk") is not None


def wrk_command(url: str, body: bytes, concurrency: int, seconds: float, script: Path) -> list[str]:
    """Return the one-thread wrk command POSTing `body` (the script is written to `script`)."""
    script.write_text(WRK_SCRIPT.format(body=body.decode()))
    duration = f"{max(1, round(seconds))}s"  # wrk takes whole seconds
    return [*f"wrk -t1 -c{concurrency} -d{duration} --timeout 30s -s".split(), str(script), url]


def parse_wrk(output: str, concurrency: int) -> Figures:
    """Read the line our Lua `done` prints; socket errors count as failed requests."""
    line = next(line for line in output.splitlines() if line.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    requests, errors = raw["requests"] + raw["sockets"], raw["non_2xx"] + raw["sockets"]
    latencies = (raw[key] / 1000.0 for key in ("p50_us", "p99_us", "max_us"))
    return Figures("wrk", concurrency, raw["duration_us"] / 1e6, requests, errors, *latencies)


def run_wrk(url: str, body: bytes, concurrency: int, seconds: float) -> Figures:
    """Run wrk against `url` and return its figures."""
    with tempfile.TemporaryDirectory(prefix="telescore-wrk-") as folder:
        command = wrk_command(url, body, concurrency, seconds, Path(folder) / "post.lua")
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=True
        )
    return parse_wrk(done.stdout, concurrency)


# -- rounds ---------------------------------------------------------------------------------------


def run_rounds(
    arms: Mapping[str, Callable[[], T]], rounds: int, log: Callable[[str], None] = print
) -> dict[str, list[T]]:
    """Run every arm once per round, reversing the order every other round; results per arm."""
    results: dict[str, list[T]] = {name: [] for name in arms}
    names = list(arms)
    for number in range(rounds):
        for name in names if number % 2 == 0 else names[::-1]:
            results[name].append(arms[name]())
        log(f"round {number + 1}/{rounds} done")
    return results


@dataclass(frozen=True)
class Ratio:
    """A comparison over paired rounds: the median of per-round ratios and their spread."""

    per_round: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.per_round) if self.per_round else math.nan

    def show(self, percent: bool = False) -> str:
        if not self.per_round:
            return "-"
        low, high = min(self.per_round), max(self.per_round)
        if percent:
            return f"{self.median:.0%} ({low:.0%}..{high:.0%})"
        return f"{self.median:.2f}x ({low:.2f}..{high:.2f})"


def paired(numerators: Sequence[float], denominators: Sequence[float]) -> Ratio:
    """Return the ratio of two arms measured in the same rounds."""
    pairs = zip(numerators, denominators, strict=False)
    return Ratio(tuple(a / b for a, b in pairs if b))
