"""Load generators for the serving benchmarks: a timed asyncio loop (httpx, gRPC) and wrk.

Each closed-loop worker sends one request, waits for its answer and sends the next, until the
time is up; requests already sent when it is up are awaited and counted. Every request is
recorded (start, end, outcome), so callers can slice latencies by time, as the reload benchmark
does around a swap.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Send = Callable[[], Awaitable[tuple[bool, str]]]
"""One request: returns (succeeded, detail), detail being an error text or a parsed field."""


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
    """Summary of one measured cell."""

    client: str
    concurrency: int
    seconds: float
    requests: int
    """Completed requests, failed ones included."""
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_seconds: float | None = None
    extra: dict[str, Any] | None = None

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the figures, derived ones included, for the JSON file."""
        figures = dict(self.__dict__)
        figures["throughput"] = self.throughput
        if self.server_cpu_seconds is not None and self.requests:
            figures["server_cpu_us_per_request"] = self.server_cpu_seconds / self.requests * 1e6
        return figures


def percentile(values: Sequence[float], share: float) -> float:
    """Return the nearest-rank percentile (share in 0..100) of `values`; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(share / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summarise(client: str, concurrency: int, samples: Sequence[Sample], seconds: float) -> Figures:
    """Summarise samples collected over `seconds` of wall time."""
    latencies = [sample.latency_ms for sample in samples]
    return Figures(
        client=client,
        concurrency=concurrency,
        seconds=seconds,
        requests=len(samples),
        errors=sum(not sample.ok for sample in samples),
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=max(latencies, default=math.nan),
    )


async def drive(send: Send, concurrency: int, seconds: float) -> tuple[list[Sample], float]:
    """Run `concurrency` closed-loop workers for `seconds`; return the samples and wall time."""
    samples: list[Sample] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            begun = time.perf_counter()
            try:
                ok, detail = await send()
            except Exception as error:  # a failed request is a result, not a crash
                ok, detail = False, f"{type(error).__name__}: {error}"[:500]
            samples.append(Sample(begun, time.perf_counter(), ok, detail))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


def http_sender(
    client: Any, url: str, body: bytes, read: Callable[[Any], str] | None = None
) -> Send:
    """Return a Send that POSTs `body` as JSON; `read` turns a 2xx response into the detail."""
    headers = {"content-type": "application/json"}

    async def send() -> tuple[bool, str]:
        response = await client.post(url, content=body, headers=headers)
        if response.is_success:
            return True, read(response) if read else ""
        return False, f"HTTP {response.status_code}: {response.text[:300]}"

    return send


def http_client(concurrency: int) -> Any:
    """Return an httpx.AsyncClient keeping up to `concurrency` connections open."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0))


# -- wrk ------------------------------------------------------------------------------------------

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {{"requests": %d, "duration_us": %d, "non_2xx": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def wrk_available() -> bool:
    """Tell whether the `wrk` binary is on PATH."""
    return shutil.which("wrk") is not None


def wrk_command(
    url: str, body: bytes, concurrency: int, seconds: int, script_dir: Path
) -> list[str]:
    """Return the wrk command (one thread) that POSTs `body` to `url` for `seconds`."""
    script = script_dir / f"post-{hashlib.sha256(body).hexdigest()[:12]}.lua"
    script.write_text(WRK_SCRIPT.format(body=body.decode()))
    return [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
    ]


def parse_wrk(output: str, concurrency: int) -> tuple[Figures, dict[str, Any]]:
    """Read the summary line our Lua `done` prints; return the figures and the raw summary."""
    line = next(line for line in output.splitlines() if line.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    sockets = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    figures = Figures(
        client="wrk",
        concurrency=concurrency,
        seconds=raw["duration_us"] / 1e6,
        # Socket errors are not responses; count them as failed requests all the same.
        requests=raw["requests"] + sockets,
        errors=raw["non_2xx"] + sockets,
        p50_ms=raw["p50_us"] / 1000.0,
        p99_ms=raw["p99_us"] / 1000.0,
        max_ms=raw["max_us"] / 1000.0,
    )
    return figures, raw


def run_wrk(
    url: str, body: bytes, concurrency: int, seconds: int, script_dir: Path
) -> tuple[Figures, dict[str, Any]]:
    """Run wrk POSTing `body` to `url`; return its figures and raw summary."""
    command = wrk_command(url, body, concurrency, seconds, script_dir)
    output = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    return parse_wrk(output, concurrency)
