"""What every benchmark shares: a CPU meter, load drivers and paired rounds.

`CpuMeter` reads who used the cores (named process groups, this client, the rest of the
machine); `measure` drives a `Target` with wrk or closed-loop httpx / grpc.aio workers;
`run_rounds`, `paired` and `spread` compare arms in paired rounds (this machine drifts by tens
of percent between cells, so only paired, repeated figures mean much).
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
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
TICKS = os.sysconf("SC_CLK_TCK")
Reading = tuple[float, dict[str, float]]
"""A CPU meter's reading: wall time (perf_counter) and cumulative CPU seconds per party."""


@dataclass(frozen=True)
class Party:
    """Processes counted together: one process group, with or without those whose command
    line holds `only` / `without`."""

    group: int
    only: str = ""
    without: str = ""

    def counts(self, pid: int, group: int) -> bool:
        if group != self.group or not (self.only or self.without):
            return group == self.group
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
        found.append(
            (int(folder.name), int(fields[2]), (int(fields[11]) + int(fields[12])) / TICKS)
        )
    return found


@dataclass(frozen=True)
class Usage:
    """CPU seconds each party used over `wall` seconds; "client" and "other" always present."""

    wall: float
    seconds: dict[str, float]

    def cores(self) -> dict[str, float]:
        return {name: value / self.wall for name, value in self.seconds.items()}


class CpuMeter:
    """Reads the CPU of named parties, this process (the client) and the rest of the machine."""

    def __init__(self, parties: Mapping[str, Party] | None = None) -> None:
        self.parties = dict(parties or {})

    def read(self) -> Reading:
        """Return a reading: wall time and cumulative CPU seconds per party."""
        totals = dict.fromkeys(self.parties, 0.0)
        for pid, group, seconds in _processes() if self.parties else []:
            for name, party in self.parties.items():
                if party.counts(pid, group):
                    totals[name] += seconds
        # This process and the children it has reaped (wrk, once it exits).
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        totals["client"] = time.process_time() + children.ru_utime + children.ru_stime
        with Path("/proc/stat").open() as stat:
            ticks = [int(value) for value in stat.readline().split()[1:8]]
        # Busy since boot: user, nice, system, irq, softirq; idle and iowait are nobody's work.
        totals["machine"] = (sum(ticks) - ticks[3] - ticks[4]) / TICKS
        return time.perf_counter(), totals

    def since(self, start: Reading) -> Usage:
        """Return what was used between `start` and now."""
        end = self.read()
        spent = {name: max(0.0, end[1][name] - start[1][name]) for name in start[1]}
        machine = spent.pop("machine")
        spent["other"] = max(0.0, machine - sum(spent.values()))
        return Usage(max(end[0] - start[0], 1e-9), spent)


def idle_cores(seconds: float = 2.0) -> float:
    """Return the cores the machine keeps busy while the benchmark does nothing."""
    meter = CpuMeter()
    start = meter.read()
    time.sleep(seconds)
    return meter.since(start).cores()["other"]


Send = Callable[[], Awaitable[tuple[bool, str]]]
"""One request: (succeeded, detail), detail being an error text or what `read` returned."""


@dataclass(frozen=True)
class Target:
    """Where to send one kind of request, and whose CPU to count while doing it."""

    kind: str
    """"http" (send `body` bytes to the URL `address`) or "grpc" (ModelInfer to host:port)."""
    address: str
    body: Any = b""
    """The request body: JSON bytes over HTTP (may be empty), a ModelInferRequest over gRPC."""
    parties: Mapping[str, Party] = field(default_factory=dict)
    settle: Callable[[], dict[str, float]] | None = None
    """Waits for the work a cell leaves behind (the log's shipping); returns figures on it."""
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    """Sent besides `content-type: application/json`, by wrk and httpx alike."""


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it (perf_counter seconds)."""

    start: float
    end: float
    ok: bool
    detail: str = ""


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
        return usage.seconds.get(party, 0.0) / max(self.figures.requests, 1) * 1e6

    def as_dict(self) -> dict[str, Any]:
        cpu = {name: self.cpu_us(name) for name in self.usage.seconds}
        figures = {"throughput": self.figures.throughput, "cores": self.usage.cores()}
        return asdict(self.figures) | figures | {"cpu_us_per_request": cpu, "after": self.after}


def medians(
    cells: Sequence[Cell], parties: Sequence[str] = (), settled: Collection[str] = ()
) -> dict[str, float]:
    """Median figures of one arm's cells over its rounds: p50, p99 (ms), req/s, errors (summed),
    and per party the cores it kept busy and its CPU per request ("<party> us"; for a party in
    `settled`, until the target had settled)."""

    def median(figure: Callable[[Cell], float]) -> float:
        return statistics.median(figure(cell) for cell in cells)

    found = {
        "p50": median(lambda cell: cell.figures.p50_ms),
        "p99": median(lambda cell: cell.figures.p99_ms),
        "req/s": median(lambda cell: cell.figures.throughput),
        "errors": sum(cell.figures.errors for cell in cells),
    }
    for party in parties:
        found[party] = median(lambda cell, p=party: cell.usage.cores().get(p, 0.0))
        found[f"{party} us"] = median(lambda cell, p=party: cell.cpu_us(p, p in settled))
    return found


def percentile(values: Sequence[float], share: float) -> float:
    """Return the nearest-rank percentile (share in 0..100); NaN when empty."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share / 100.0 * len(ordered))) - 1] if values else math.nan


def summarise(client: str, concurrency: int, samples: Sequence[Sample], seconds: float) -> Figures:
    """Summarise samples collected over `seconds` of wall time."""
    latencies = [(sample.end - sample.start) * 1000.0 for sample in samples]
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
                response = await stub.ModelInfer(target.body, timeout=30)
                return True, read(response) if read else ""

            yield send_grpc
        return
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json", **target.headers}
    request = {"method": target.method, "url": target.address, "content": target.body or None}
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0)) as client:

        async def send_http() -> tuple[bool, str]:
            response = await client.request(**request, headers=headers)
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

    async def run() -> tuple[Reading, Figures, Usage]:
        async with sender(target, concurrency) as send:
            start = meter.read()
            samples, wall = await drive(send, concurrency, seconds)
            return start, summarise(client, concurrency, samples, wall), meter.since(start)

    if client == "wrk":
        start = meter.read()
        figures = run_wrk(target, concurrency, seconds)
        usage = meter.since(start)
    else:
        start, figures, usage = asyncio.run(run())
    if target.settle is None:
        return Cell(figures, usage)
    after = target.settle()  # first: the meter's reading then includes the settling
    return Cell(figures, usage, meter.since(start), after)


WRK_SCRIPT = """\
wrk.method = "{method}"
{headers}
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


def wrk_script(target: Target) -> str:
    """Return the Lua script that sends `target`'s request and prints a WRK_JSON summary."""
    headers = {"Content-Type": "application/json", **target.headers}
    lines = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items())
    return WRK_SCRIPT.format(method=target.method, headers=lines, body=target.body.decode())


def run_wrk(target: Target, concurrency: int, seconds: float) -> Figures:
    """Run wrk, one thread, against `target` and return its figures (socket errors count as
    failed requests)."""
    with tempfile.TemporaryDirectory(prefix="telescore-wrk-") as folder:
        script = Path(folder) / "request.lua"
        script.write_text(wrk_script(target))
        duration = f"{max(1, round(seconds))}s"  # wrk takes whole seconds
        command = [*f"wrk -t1 -c{concurrency} -d{duration} --timeout 30s -s".split(), str(script)]
        done = subprocess.run(
            [*command, target.address], capture_output=True, text=True, timeout=seconds + 60
        )
    done.check_returncode()
    line = next(line for line in done.stdout.splitlines() if line.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))  # the line our Lua `done` prints
    requests, errors = raw["requests"] + raw["sockets"], raw["non_2xx"] + raw["sockets"]
    latencies = (raw[key] / 1000.0 for key in ("p50_us", "p99_us", "max_us"))
    return Figures("wrk", concurrency, raw["duration_us"] / 1e6, requests, errors, *latencies)


def timed_into(seconds: dict[str, float], name: str, run: Callable[..., T]) -> Callable[..., T]:
    """Wrap `run` so that the wall time of its calls adds up in `seconds[name]`."""
    seconds.setdefault(name, 0.0)

    def timed(*args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - started

    return timed


def run_rounds(
    arms: Mapping[str, Callable[[], T]], rounds: int, log: Callable[[str], None] = print
) -> dict[str, list[T]]:
    """Run every arm once per round, reversing the order every other round; results per arm."""
    results: dict[str, list[T]] = {name: [] for name in arms}
    for number in range(rounds):
        for name in list(arms) if number % 2 == 0 else list(arms)[::-1]:
            results[name].append(arms[name]())
        log(f"round {number + 1}/{rounds} done")
    return results


def paired(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Return the per-round ratios of two arms measured in the same rounds."""
    return [a / b for a, b in zip(numerators, denominators, strict=False) if b]


def median_of(values: Sequence[float]) -> float:
    """Return the median of per-round figures; NaN when there are none."""
    return statistics.median(values) if values else math.nan


def spread(values: Sequence[float], form: str = "{:.2f}", unit: str = "x") -> str:
    """Show the median of per-round figures with their range, e.g. '1.23x (1.10..1.40)'."""
    if not values:
        return "-"
    low, middle, high = map(form.format, (min(values), statistics.median(values), max(values)))
    return f"{middle}{unit} ({low}..{high})"
