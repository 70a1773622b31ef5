"""What the web app adds to a direct MLServer call, and how fast a ranked page is, in one run.

    .venv/bin/python -m benchmarks.app [--seconds 3] [--latency-seconds 2] [--rounds 5]
                                       [--no-wrk] [--page-views 200] [--prospects N]
                                       [--prediction-log]

It registers the real model (all 41,188 rows) in an MLflow server of its own, starts nx-27017,
telescore's MLServer serving `champion` (prediction log off unless --prediction-log: every path
goes through the same MLServer, whose log costs each request the same few µs, and a drain of
the log after each cell takes up to `ship_max_defer`, 30 s, on a machine with less than one
idle core), seeds every prospect of data/bank-additional-full.csv.gz with
`jobs.campaign.seed_prospects`, creates a caller's API key, and starts the web app as
`telescore up` does (`services.embedded.outcomes_api`: uvicorn, one process, no access log),
configured through TELESCORE_* variables only. Then, on 127.0.0.1:

1. Scoring one prospect, side by side at c=1 and c=32, the same prospect every time:
   (a) a direct V2 REST call to MLServer with the very inputs the app sends it (the
   prospect's fields, today's calendar, the indicators in force); (b) the app's
   POST /prospects/score-profiles with that profile; (c) the app's POST /prospects/score with
   its id (read from MongoDB); and the app's GET /health, its own HTTP floor. Every path runs
   once per round, in reverse order every other round (`harness.run_rounds`); what (b) and (c)
   add is the median of per-round differences from (a), with their spread. With the
   prediction log on, the shipper drains after every cell, so no cell pays for another's.
2. The ranked call list over all prospects: the first view (scores everyone), then
   `--page-views` views of the JSON list (GET /prospects) and of the callers' HTML page
   (GET /, reasons included) with different pages and filters, interleaved; then one indicators
   revision and the view that rescores everyone again.
3. Where the app's time goes, in this process, on the app's own objects (`create_app` with the
   same settings, its lifespan entered): each piece of the two scoring paths and of a page view
   timed alone; levers (the same work done another way, such as the pandas path before
   07bea5c) timed in pairs, called in turn; whole requests sent straight into the ASGI app, with
   the thread-pool calls (FastAPI's and the app's own) counted, and run inline; and cProfile of
   whole requests, own time grouped by package, with the garbage collector's pauses meanwhile.

Load comes from wrk (one thread; the Lua script below adds the API key) or, without it, the
harness's closed-loop httpx workers. Prints, writes benchmarks/results/app.{json,png}, asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import math
import pstats
import random
import secrets
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import harness, stack
from benchmarks.report import Panel, Report
from benchmarks.serving import timed

DATABASE = "benchmark"
"""The prediction log's database in `stack.mlserver`: the app reads and writes it too."""
DATASET = stack.PROJECT_ROOT / "data" / "bank-additional-full.csv.gz"
DIRECT, PROFILES, BY_ID = "(a) MLServer V2, direct", "(b) app score-profiles", "(c) app score by id"
FLOOR = "app GET /health (its floor)"
PATHS = (DIRECT, PROFILES, BY_ID, FLOOR)
CONCURRENCY = (1, 32)
TARGET_ADDED_P50_MS, TARGET_PAGE_MS = 2.0, 100.0
PARTIES = ("app", "mlserver", "shipper", "db", "client", "other")
API_KEY_HEADER = "X-API-Key"
FIRST_VIEW_TIMEOUT = 600.0
SEED = 20261124
PROFILED_CALLS = 300
# The harness's wrk script sends JSON POSTs; these lines replace its method line, so that the
# same script (and its WRK_JSON summary, read by harness.parse_wrk) sends any method and headers.
WRK_METHOD_LINE = 'wrk.method = "POST"'
WRK_REQUEST_LINES = """\
wrk.method = "{method}"
{headers}"""
Cells = dict[int, harness.Cell]
"""One round of one path: a cell per concurrency."""


# -- requests and load ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One kind of request: what is sent where, and whose CPU is counted meanwhile."""

    label: str
    method: str
    url: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    parties: Mapping[str, harness.Party] = field(default_factory=dict)
    settle: Callable[[], dict[str, float]] | None = None


def wrk_script(call: Call) -> str:
    """Return the harness's wrk script, sending `call`'s method and headers."""
    headers = "\n".join(
        f'wrk.headers["{name}"] = "{value}"' for name, value in call.headers.items()
    )
    script = harness.WRK_SCRIPT.format(body=call.body.decode())
    lines = WRK_REQUEST_LINES.format(method=call.method, headers=headers)
    return script.replace(WRK_METHOD_LINE, lines, 1)


def run_wrk(call: Call, concurrency: int, seconds: float) -> harness.Figures:
    """Run wrk with the harness's command (one thread) and our script; return its figures."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="telescore-wrk-") as folder:
        script = Path(folder) / "request.lua"
        command = harness.wrk_command(call.url, call.body, concurrency, seconds, script)
        script.write_text(wrk_script(call))  # over the harness's POST-only script
        done = subprocess.run(  # noqa: S603 - our own command line
            command, capture_output=True, text=True, timeout=seconds + 60, check=True
        )
    return harness.parse_wrk(done.stdout, concurrency)


@contextlib.asynccontextmanager
async def http_sender(call: Call, concurrency: int) -> Any:
    """Yield a harness Send for `call` over one pooled httpx.AsyncClient."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json", **call.headers}
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0)) as client:

        async def send() -> tuple[bool, str]:
            response = await client.request(
                call.method, call.url, content=call.body or None, headers=headers
            )
            if response.is_success:
                return True, ""
            return False, f"HTTP {response.status_code}: {response.text[:200]}"

        yield send


def measure(call: Call, client: str, concurrency: int, seconds: float) -> harness.Cell:
    """`harness.measure` for a call with headers: drive it, meter every party, let it settle."""
    meter = harness.CpuMeter(call.parties)

    async def run() -> tuple[Any, harness.Figures, harness.Usage]:
        async with http_sender(call, concurrency) as send:
            start = meter.read()
            samples, wall = await harness.drive(send, concurrency, seconds)
            figures = harness.summarise(client, concurrency, samples, wall)
            return start, figures, meter.since(start)

    if client == "wrk":
        start = meter.read()
        figures = run_wrk(call, concurrency, seconds)
        usage = meter.since(start)
    else:
        start, figures, usage = asyncio.run(run())
    if call.settle is None:
        return harness.Cell(figures, usage)
    after = call.settle()
    return harness.Cell(figures, usage, meter.since(start), after)


def warm(call: Call, seconds: float = 0.5) -> None:
    """Open connections and pay first-request costs before anything is measured."""

    async def run() -> None:
        async with http_sender(call, 4) as send:
            await harness.drive(send, 4, seconds)

    asyncio.run(run())


# -- the services ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """The running services, and what the requests need."""

    tracking: str
    mongodb: stack.Server
    mlserver: stack.Server
    app: stack.Server
    api_key: str
    secret: str
    prospects: int
    seconds: dict[str, float]
    """Set-up steps' wall time."""

    def parties(self) -> dict[str, harness.Party]:
        """Every process group a request may keep busy, the shipper apart from MLServer."""
        return {
            "app": harness.Party(self.app.pid),
            "mlserver": harness.Party(self.mlserver.pid, without=stack.SHIPPER),
            "shipper": harness.Party(self.mlserver.pid, only=stack.SHIPPER),
            "db": harness.Party(self.mongodb.pid),
        }


def app_env(
    services: stack.Stack, mongodb: stack.Server, mlserver: stack.Server, tracking: str, secret: str
) -> dict[str, str]:
    """The app's settings, as environment variables only (no developer's .env)."""
    return stack.SERVER_ENV | {
        "TELESCORE_ENV_FILE": str(services.dir / "no.env"),
        "TELESCORE_MONGODB_URI": mongodb.url,
        "TELESCORE_MONGODB_DATABASE": DATABASE,
        "TELESCORE_SERVING_URL": mlserver.url,
        "TELESCORE_MLFLOW_TRACKING_URI": tracking,
        "TELESCORE_STATE_DIR": str(services.dir / "app"),
        # Known to the benchmark, so that it can sign a caller's session cookie for the page.
        "TELESCORE_API_SECRET_KEY": secret,
    }


def start_platform(
    services: stack.Stack, prospects: int | None, logged: bool, report: Report
) -> Platform:
    """Start MLflow (with the champion), nx-27017, MLServer and the app; seed the campaign."""
    from telescore.io.access_store import AccessStore
    from telescore.io.prospect_store import ProspectStore
    from telescore.jobs.access import create_api_key
    from telescore.jobs.campaign import seed_prospects
    from telescore.services.embedded import outcomes_api
    from telescore.services.processes import free_port

    seconds, started = {}, time.perf_counter()
    mongodb = services.mongodb()
    tracking, _, registered = services.champion()
    seconds["MLflow + nx-27017 + fit and register"] = time.perf_counter() - started
    report.log(f"registered {registered.uri} as champion")
    mlserver = services.mlserver("MLServer", tracking, mongodb if logged else None)
    started = time.perf_counter()
    # Seeding needs only nx-27017: it runs while MLServer loads.
    mlserver.process.launch()
    services.callback(mlserver.process.stop)
    with ProspectStore(mongodb.url, DATABASE, timeout_ms=60_000) as store:
        stored, revision = seed_prospects(store, DATASET, prospects, by="benchmark")
    with AccessStore(mongodb.url, DATABASE) as access:
        api_key = create_api_key(access, "benchmark", "caller").key
    seconds["seed prospects + API key"] = time.perf_counter() - started
    report.log(f"seeded {stored:,} prospects, indicators revision {revision}")
    mlserver.process.wait_healthy()
    secret = secrets.token_urlsafe(48)
    port = free_port()
    env = app_env(services, mongodb, mlserver, tracking, secret)
    process = outcomes_api(services.dir / "app", port, stack.HOST, env)
    app = stack.Server("app", process, f"http://{stack.HOST}:{port}")
    started = time.perf_counter()
    services.start(app)
    seconds["app start (uvicorn)"] = time.perf_counter() - started
    return Platform(tracking, mongodb, mlserver, app, api_key, secret, stored, seconds)


@dataclass(frozen=True)
class Prospect:
    """The prospect every scoring request is about, as each path sends it."""

    prospect_id: str
    profile: dict[str, Any]
    model_inputs: list[dict[str, Any]]
    """One plain row: what the app sends MLServer (calendar and indicators added)."""


def the_prospect(platform: Platform) -> Prospect:
    """Read the first prospect and build its model inputs as `CallList.score_rows` does."""
    from telescore.core.prospects import PROSPECT_FIELDS, model_records
    from telescore.io.prospect_store import ProspectStore
    from telescore.jobs.ranking import read_indicators

    with ProspectStore(platform.mongodb.url, DATABASE) as store:
        document = store.prospects.find_one({})
        indicators = read_indicators(store)
    if document is None or indicators is None:
        raise RuntimeError("the campaign was not seeded")
    profile = {name: document[name] for name in PROSPECT_FIELDS}
    today = datetime.now(UTC).date()  # the app's calendar day
    inputs = model_records([profile], indicators.indicators, today)
    return Prospect(str(document["_id"]), profile, inputs)


def calls(platform: Platform, prospect: Prospect) -> dict[str, Call]:
    """The four paths, each with the CPU parties and the shipper's drain."""
    from telescore.io.serving_client import inference_request

    parties = platform.parties()
    drain = platform.mlserver.drain if platform.mlserver.logged else None
    key = {API_KEY_HEADER: platform.api_key}
    app = platform.app.url
    # The request the app's ServingClient sends: same inputs, a request id of its own.
    direct = inference_request(prospect.model_inputs, request_id=str(uuid.uuid4()))
    profile = prospect.profile | {"prospect_id": prospect.prospect_id}
    return {
        DIRECT: Call(
            DIRECT, "POST", platform.mlserver.url + stack.INFER_PATH, compact(direct), {}, parties,
            drain,
        ),
        PROFILES: Call(
            PROFILES, "POST", f"{app}/prospects/score-profiles", compact({"profiles": [profile]}),
            key, parties, drain,
        ),
        BY_ID: Call(
            BY_ID, "POST", f"{app}/prospects/score",
            compact({"prospect_ids": [prospect.prospect_id]}), key, parties, drain,
        ),
        FLOOR: Call(FLOOR, "GET", f"{app}/health", parties=parties),
    }  # fmt: skip


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def check_answers(paths: Mapping[str, Call]) -> list[str]:
    """Send each scoring request once; return a line per path with its score (they must agree)."""
    import httpx

    lines = []
    for call in paths.values():
        response = httpx.request(
            call.method,
            call.url,
            content=call.body or None,
            headers={"content-type": "application/json", **call.headers},
            timeout=30,
        )
        if not response.is_success:
            raise RuntimeError(f"{call.label}: HTTP {response.status_code}: {response.text}")
        body = response.json()
        if call.label == DIRECT:
            lines.append(f"{call.label}: score {body['outputs'][0]['data'][0]:.6f}")
        elif call.label != FLOOR:
            lines.append(f"{call.label}: score {body[0]['score']:.6f}, route {body[0]['route']}")
    return lines


# -- scoring one prospect: the table --------------------------------------------------------------


def spread(values: Sequence[float], unit: str = " ms") -> str:
    """A median with the range of the rounds, e.g. '+1.23 ms (+1.10..+1.40)'."""
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{statistics.median(values):+.2f}{unit} ({low:+.2f}..{high:+.2f})"


def report_scoring(report: Report, results: dict[str, list[Cells]], client: str) -> None:
    """Print the side-by-side table and what (b) and (c) add to (a)."""
    rows, added = [], {}

    def median(cells: list[harness.Cell], figure: Callable[[harness.Cell], float]) -> float:
        return statistics.median(figure(cell) for cell in cells)

    for concurrency in CONCURRENCY:
        reference = [each[concurrency] for each in results[DIRECT]]
        for label in PATHS:
            cells = [each[concurrency] for each in results[label]]
            p50 = [
                c.figures.p50_ms - r.figures.p50_ms for c, r in zip(cells, reference, strict=True)
            ]
            p99 = [
                c.figures.p99_ms - r.figures.p99_ms for c, r in zip(cells, reference, strict=True)
            ]
            ratio = harness.paired(
                [c.figures.p50_ms for c in cells], [r.figures.p50_ms for r in reference]
            )
            added[label, concurrency] = p50
            rows.append([
                label, concurrency,
                median(cells, lambda c: c.figures.p50_ms),
                median(cells, lambda c: c.figures.p99_ms),
                median(cells, lambda c: c.figures.throughput),
                "" if label == DIRECT else spread(p50),
                "" if label == DIRECT else spread(p99),
                "" if label == DIRECT else ratio.show(),
                median(cells, lambda c: c.cpu_us("app", False)),
                median(cells, lambda c: c.cpu_us("mlserver", False)),
                *(median(cells, lambda c, p=p: c.usage.cores().get(p, 0.0)) for p in PARTIES),
                sum(c.figures.errors for c in cells),
            ])  # fmt: skip
    report.table(
        f"Scoring one prospect from 127.0.0.1 via {client} (medians of {len(results[DIRECT])} "
        "rounds)",
        ["path", "c", "p50 ms", "p99 ms", "req/s", "p50 - (a)", "p99 - (a)", "p50 / (a)"]
        + ["app us/req", "MLS us/req", "cores: app", "MLServer", "shipper", "db", "client"]
        + ["other", "errors"],
        rows,
        "differences and ratios: median of per-round figures against (a) in the same round, "
        "range in brackets; us/req: CPU per request during the cell (the app's, MLServer's "
        "less its shipper); cores: CPU s per wall s",
    )
    report.line(f"\nTarget: the app adds at most {TARGET_ADDED_P50_MS:g} ms at p50 to (a):")
    for concurrency in CONCURRENCY:
        for label in (PROFILES, BY_ID):
            value = statistics.median(added[label, concurrency])
            verdict = "meets " if value <= TARGET_ADDED_P50_MS else "misses"
            report.line(
                f"  {verdict} {label}, c={concurrency}: {spread(added[label, concurrency])}"
            )
    report.data["added_p50_ms"] = {f"{k[0]} c={k[1]}": v for k, v in added.items()}


# -- ranked pages ---------------------------------------------------------------------------------


def page_queries(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Different pages and filters, as callers would ask for them."""
    from telescore.core.prospects import AGE_BANDS
    from telescore.core.schema import CATEGORICAL_VALUES

    jobs = [each for each in CATEGORICAL_VALUES["job"] if each != "unknown"]
    queries = []
    for _ in range(count):
        query: dict[str, Any] = {"page": rng.choice([1, 1, 2, 3, rng.randint(4, 40)])}
        if rng.random() < 0.5:
            query["job"] = rng.choice(jobs)
        if rng.random() < 0.3:
            query["age_band"] = rng.choice(list(AGE_BANDS))
        if rng.random() < 0.3:
            query["min_score"] = rng.choice([0.05, 0.1, 0.2, 0.3])
        if rng.random() < 0.3:
            query["not_called"] = "true"
        queries.append(query)
    return queries


def timed_get(client: Any, path: str, params: Mapping[str, Any], check: str) -> float:
    """GET once; return its milliseconds, raising on a failure."""
    started = time.perf_counter()
    response = client.get(path, params=params)
    elapsed = (time.perf_counter() - started) * 1000.0
    if response.status_code != 200 or check not in response.text:
        raise RuntimeError(
            f"GET {path} {params}: HTTP {response.status_code}: {response.text[:300]}"
        )
    return elapsed


def measure_pages(report: Report, platform: Platform, views: int) -> dict[str, Any]:
    """Time the first (scoring) view, then views of the JSON list and the page, interleaved."""
    import httpx

    from telescore.app.security import SESSION_COOKIE, Sessions
    from telescore.core.access import Principal
    from telescore.io.prospect_store import ProspectStore
    from telescore.jobs.ranking import read_indicators, set_indicators

    cookie, _ = Sessions(platform.secret, 3600).new(Principal("benchmark", "caller", "user"))
    meter = harness.CpuMeter(platform.parties())
    client = httpx.Client(
        base_url=platform.app.url,
        headers={API_KEY_HEADER: platform.api_key},
        cookies={SESSION_COOKIE: cookie},
        timeout=FIRST_VIEW_TIMEOUT,
    )
    figures: dict[str, Any] = {}
    with client:
        start = meter.read()
        figures["first JSON view"] = timed_get(client, "/prospects", {"page": 1}, '"prospects"')
        figures["first view cores"] = meter.since(start).seconds
        figures["first view drain s"] = drained(platform)
        report.log(f"first view: {figures['first JSON view'] / 1000:.1f} s")
        # The page's first view loads the scoring version from MLflow, for the reasons.
        figures["first HTML view"] = timed_get(client, "/", {"page": 1}, "<table")
        json_views, html_views = [], []
        for number, query in enumerate(page_queries(views, random.Random(SEED))):
            order = [("json", query), ("html", query)]
            for kind, params in order if number % 2 == 0 else order[::-1]:
                if kind == "json":
                    json_views.append(timed_get(client, "/prospects", params, '"prospects"'))
                else:
                    html_views.append(timed_get(client, "/", params, "</html>"))
        figures["JSON views"], figures["HTML views"] = json_views, html_views
        # A new indicators revision changes the cache key: the next view scores everyone again.
        with ProspectStore(platform.mongodb.url, DATABASE) as store:
            record = read_indicators(store)
            assert record is not None  # noqa: S101 - seeded above
            set_indicators(store, record.indicators, record.effective_from, "benchmark")
        time.sleep(1.2)  # the app reads the indicators at most once a second
        start = meter.read()
        figures["rescore view"] = timed_get(client, "/prospects", {"page": 1}, '"prospects"')
        figures["rescore cores"] = meter.since(start).seconds
        figures["next view"] = timed_get(client, "/prospects", {"page": 2}, '"prospects"')
        drained(platform)
    return figures


def drained(platform: Platform) -> float:
    """With the prediction log on, wait until it is shipped; return the seconds waited."""
    return platform.mlserver.wait_drained() if platform.mlserver.logged else math.nan


def report_pages(report: Report, figures: dict[str, Any], prospects: int) -> None:
    """Print the page views' table."""

    def cpu(seconds: Mapping[str, float]) -> str:
        parts = ("app", "mlserver", "shipper", "db", "client", "other")
        return ", ".join(f"{name} {seconds.get(name, 0.0):.1f}" for name in parts)

    rows = [
        ["first view (JSON), scores everyone", 1, figures["first JSON view"], None, None, None],
        ["first view of the page (HTML): loads the model for reasons", 1,
         figures["first HTML view"], None, None, None],
    ]  # fmt: skip
    for label, key in (("JSON list, GET /prospects", "JSON views"), ("page, GET /", "HTML views")):
        values = figures[key]
        rows.append([
            label, len(values), statistics.median(values), harness.percentile(values, 99),
            max(values), sum(value < TARGET_PAGE_MS for value in values) / len(values),
        ])  # fmt: skip
    rows += [
        ["after an indicators revision: the view that rescores", 1, figures["rescore view"]],
        ["the view after it", 1, figures["next view"]],
    ]
    report.table(
        f"Ranked pages over {prospects:,} prospects (page size 25; ms)",
        ["view", "views", "p50 / time", "p99", "max", f"share < {TARGET_PAGE_MS:g} ms"],
        rows,
        "views with different pages and filters (job, age band, min score, not called), JSON "
        "and HTML interleaved, one at a time",
    )
    drain = figures["first view drain s"]
    shipped = "" if math.isnan(drain) else f"; its predictions shipped {drain:.1f} s after it"
    report.line(f"CPU seconds during the first view: {cpu(figures['first view cores'])}{shipped}")
    report.line(f"CPU seconds during the rescoring view: {cpu(figures['rescore cores'])}")
    for key in ("JSON views", "HTML views"):
        p50 = statistics.median(figures[key])
        verdict = "meets " if harness.percentile(figures[key], 99) < TARGET_PAGE_MS else "misses"
        report.line(
            f"  {verdict} a ranked page in < {TARGET_PAGE_MS:g} ms ({key}): p50 {p50:.1f} ms, "
            f"p99 {harness.percentile(figures[key], 99):.1f} ms"
        )


# -- where the time goes, in process --------------------------------------------------------------


def in_process_settings(platform: Platform, state_dir: Path) -> Any:
    """The settings the app process reads from its environment, as objects."""
    from pydantic import SecretStr

    from telescore.settings import (
        ApiSettings,
        MlflowSettings,
        MongoSettings,
        ProjectSettings,
        ServingSettings,
        Settings,
    )

    return Settings(
        project=ProjectSettings(state_dir=state_dir),
        mongodb=MongoSettings(uri=SecretStr(platform.mongodb.url), database=DATABASE),
        serving=ServingSettings(url=platform.mlserver.url),
        mlflow=MlflowSettings(tracking_uri=platform.tracking),
        api=ApiSettings(secret_key=SecretStr(platform.secret)),
    )


async def asgi_request(app: Any, method: str, path: str, body: bytes, headers: Any) -> bytes:
    """Send one request straight into the ASGI app (no client, no socket); return its body."""
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": raw_headers,
        "client": ("127.0.0.1", 1),
        "server": ("app", 80),
    }
    chunks: list[bytes] = []
    status = 0
    sent, answered = False, asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # asked again only to watch for a disconnect: as httpx's ASGITransport does
            await answered.wait()
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    await app(scope, receive, send)
    if status != 200:
        raise RuntimeError(f"{method} {path}: {status} {b''.join(chunks)[:300]!r}")
    return b"".join(chunks)


@dataclass
class Hops:
    """FastAPI's thread-pool calls, counted; with `inline`, run in the calling thread."""

    inline: bool = False
    counted: Counter[str] = field(default_factory=Counter)


@contextlib.contextmanager
def thread_pool_hops() -> Any:
    """Route FastAPI's `run_in_threadpool` (sync dependencies, endpoints, response validation)
    and the app's own (its async endpoints' blocking work, an API key not cached) through a
    Hops, in this process only."""
    from unittest import mock

    import fastapi.dependencies.utils
    import fastapi.routing
    from starlette.concurrency import run_in_threadpool

    import telescore.app.deps
    import telescore.app.routes.prospects

    hops = Hops()

    async def hop(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.counted[getattr(function, "__qualname__", repr(function))] += 1
        if hops.inline:
            return function(*args, **kwargs)
        return await run_in_threadpool(function, *args, **kwargs)

    with (
        mock.patch.object(fastapi.routing, "run_in_threadpool", hop),
        mock.patch.object(fastapi.dependencies.utils, "run_in_threadpool", hop),
        mock.patch.object(telescore.app.deps, "run_in_threadpool", hop),
        mock.patch.object(telescore.app.routes.prospects, "run_in_threadpool", hop),
    ):
        yield hops


async def timed_pair(
    first: tuple[str, Callable[[], Any]],
    second: tuple[str, Callable[[], Any]],
    seconds: float = 1.0,
) -> list[list[Any]]:
    """Call two alternatives in turn for `seconds`; return [label, median µs, p99 µs] of each,
    and the median of the per-pair differences (second - first): a paired comparison."""
    import inspect

    durations: tuple[list[float], list[float]] = ([], [])
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(durations[0]) < 50:
        for index, (_, call) in enumerate((first, second)):
            started = time.perf_counter()
            result = call()
            if inspect.isawaitable(result):
                await result
            durations[index].append((time.perf_counter() - started) * 1e6)
    kept = [each[5:] for each in durations]  # the first calls fill caches
    differences = [b - a for a, b in zip(*kept, strict=True)]
    return [
        [first[0], statistics.median(kept[0]), harness.percentile(kept[0], 99)],
        [second[0], statistics.median(kept[1]), harness.percentile(kept[1], 99)],
        ["  paired difference, second - first", statistics.median(differences), None],
    ]


def package_of(filename: str, name: str) -> str:
    """Name where a profiled function lives: a package, the standard library, or a wait."""
    if filename == "~":  # a built-in
        waits = ("recv", "send", "select", "poll", "acquire", "sleep")
        if any(wait in name for wait in waits):
            return "waiting on a socket (MLServer, nx-27017)"
        return "C built-ins (json, dict, ...)"
    for marker in ("site-packages/", "/src/"):
        if marker in filename:
            return filename.split(marker, 1)[1].split("/", 1)[0]
    return "Python standard library (asyncio, uuid, ...)"


async def profile_by_package(
    request: Callable[[], Any], repeat: int
) -> tuple[list[list[Any]], dict[int, list[float]]]:
    """Profile `repeat` awaited requests: µs per request by package (own time), largest first;
    and the garbage collector's pauses meanwhile (ms, by generation)."""
    import gc

    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    began = [0.0]

    def collected(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append((time.perf_counter() - began[0]) * 1000.0)

    profile = cProfile.Profile()
    gc.callbacks.append(collected)
    started = time.perf_counter()
    profile.enable()
    for _ in range(repeat):
        await request()
    profile.disable()
    wall = time.perf_counter() - started
    gc.callbacks.remove(collected)
    totals: Counter[str] = Counter()
    stats: Any = pstats.Stats(profile).stats
    for (filename, _, name), (_, _, own, _, _) in stats.items():
        totals[package_of(filename, name)] += own
    rows = [[package, seconds / repeat * 1e6] for package, seconds in totals.most_common(10)]
    return [["wall per request, profiled", wall / repeat * 1e6], *rows], pauses


async def breakdown(platform: Platform, prospect: Prospect, work: Path) -> dict[str, Any]:
    """Time the pieces of both scoring paths on the app's own objects, in this process."""
    from telescore.app.main import create_app

    app = create_app(in_process_settings(platform, work))
    with thread_pool_hops() as hops:
        async with app.router.lifespan_context(app):
            return await time_pieces(Pieces(app, platform, prospect, hops))


@dataclass
class Pieces:
    """The app (its lifespan entered), the requests of (b) and (c), and the objects they use."""

    app: Any
    platform: Platform
    prospect: Prospect
    hops: Hops

    def __post_init__(self) -> None:
        from telescore.app.routes.prospects import ScoreProfiles
        from telescore.core.prospects import model_records
        from telescore.io.serving_client import inference_request

        self.profiles_body = compact(
            {"profiles": [self.prospect.profile | {"prospect_id": self.prospect.prospect_id}]}
        )
        self.by_id_body = compact({"prospect_ids": [self.prospect.prospect_id]})
        self.headers = {API_KEY_HEADER: self.platform.api_key, "content-type": "application/json"}
        state = self.app.state
        self.call_list, self.scoring, self.serving = state.call_list, state.scoring, state.serving
        self.indicators = self.call_list.indicators.get().indicators
        self.today = datetime.now(UTC).date()
        self.request = ScoreProfiles.model_validate_json(self.profiles_body)
        self.keys = [self.prospect.prospect_id]
        self.rows = model_records(self.profile_dumps(), self.indicators, self.today)
        self.body = inference_request(self.rows, str(uuid.uuid4()))
        self.http = self.serving._http  # the app's own httpx.Client to MLServer

    def profile_dumps(self) -> list[dict[str, Any]]:
        """What the endpoint makes of the validated profiles: the rows it scores."""
        return [p.model_dump(exclude={"prospect_id"}) for p in self.request.profiles]

    def pandas_path(self) -> Any:
        """Before 07bea5c: the endpoint's DataFrame, model_rows, ScoringService's iloc, then
        the call."""
        import pandas as pd

        from telescore.core.prospects import model_rows

        inputs = model_rows(pd.DataFrame(self.profile_dumps()), self.indicators, self.today)
        return self.serving.infer(inputs.iloc[[0]], request_id="id")

    def post(self, path: str, body: bytes) -> Callable[[], Any]:
        return lambda: asgi_request(self.app, "POST", path, body, self.headers)

    def health(self) -> Any:
        return asgi_request(self.app, "GET", "/health", b"", {})

    async def inline(self, request: Callable[[], Any]) -> Any:
        """Send a request with FastAPI's thread-pool calls run in this thread."""
        self.hops.inline = True
        try:
            return await request()
        finally:
            self.hops.inline = False

    async def count_hops(self, request: Callable[[], Any]) -> dict[str, int]:
        """Send a request; return FastAPI's thread-pool calls during it, by function."""
        self.hops.counted.clear()
        await request()
        return dict(self.hops.counted)


async def time_pieces(p: Pieces) -> dict[str, Any]:
    """Time each piece alone, the levers in pairs, whole requests, and profile them."""
    import http.client
    from urllib.parse import urlsplit

    import anyio
    import pandas as pd
    from fastapi.encoders import jsonable_encoder
    from pydantic import TypeAdapter

    from telescore.app.routes.prospects import Score, ScoreProfiles
    from telescore.core.prospects import ID, model_records, model_rows
    from telescore.io.serving_client import inference_request, parse_scores

    state, call_list, keys = p.app.state, p.call_list, p.keys
    answer = p.http.post(stack.INFER_PATH, json=p.body).json()
    scores = [
        Score(prospect_id=keys[0], score=s.score, prediction_id=s.prediction_id,
              model_version=s.model_version, route=s.route)
        for s in call_list.score_rows(p.profile_dumps(), keys)
    ]  # fmt: skip
    adapter = TypeAdapter(list[Score])
    found = state.prospect_store.get_many(keys)
    call_list.score_prospects(keys)  # the by-id path once, before it is timed
    profiles_request = p.post("/prospects/score-profiles", p.profiles_body)
    by_id_request = p.post("/prospects/score", p.by_id_body)
    # The key as a caller's steady state finds it: cached (a miss costs a hop, once per 30 s).
    state.api_keys.principal(p.platform.api_key)
    hops = {
        "GET /health": await p.count_hops(p.health),
        "(b)": await p.count_hops(profiles_request),
        "(c)": await p.count_hops(by_id_request),
    }
    hop_count = sum(hops["(b)"].values())

    def respond() -> bytes:
        # What FastAPI does with the endpoint's return value: validate, encode, dump.
        return json.dumps(jsonable_encoder(adapter.validate_python(scores))).encode()

    pieces = [
        await timed("API key check, cached (ApiKeys.cached, inline)",
                    lambda: state.api_keys.cached(p.platform.api_key)),
        await timed("validate the body: ScoreProfiles",
                    lambda: ScoreProfiles.model_validate(json.loads(p.profiles_body))),
        await timed("model_dump of the profiles (endpoint)", p.profile_dumps),
        await timed("model_records: calendar + indicators (plain rows)",
                    lambda: model_records(p.profile_dumps(), p.indicators, p.today)),
        await timed("routing, served versions, indicators (cached for 1 s)", lambda: (
            p.scoring.versions.get(), p.scoring.routing.get(), call_list.indicators.get())),
        await timed("inference_request from plain rows", lambda: inference_request(p.rows, "id")),
        await timed("POST to MLServer: the app's httpx.Client, json=",
                    lambda: p.http.post(stack.INFER_PATH, json=p.body).json()),
        await timed("parse_scores", lambda: parse_scores(answer)),
        await timed("build Score, validate + serialise the response", respond),
        await timed(f"one thread-pool hop (x{hop_count} per request)",
                    lambda: anyio.to_thread.run_sync(lambda: None)),
    ]  # fmt: skip
    total = sum(row[1] for row in pieces) + (hop_count - 1) * pieces[-1][1]
    pieces.append([f"sum of the pieces ({hop_count} hops)", total, None])
    pieces += [
        await timed("CallList.score_rows whole (model_records + score)",
                    lambda: call_list.score_rows(p.profile_dumps(), keys)),
        await timed("ServingClient.infer whole, one plain row",
                    lambda: p.serving.infer(p.rows, request_id="id")),
    ]  # fmt: skip
    extra_by_id = [
        await timed("ProspectStore.get_many (nx-27017)",
                    lambda: state.prospect_store.get_many(keys)),
        await timed("model_records of the documents found",
                    lambda: model_records([found[k] for k in keys], p.indicators, p.today)),
        await timed("CallList.score_prospects whole", lambda: call_list.score_prospects(keys)),
        await timed("  for comparison, before 07bea5c: pd.DataFrame(...).set_index + model_rows",
                    lambda: model_rows(pd.DataFrame([found[k] for k in keys]).set_index(ID),
                                       p.indicators, p.today)),
    ]  # fmt: skip

    address = urlsplit(p.platform.mlserver.url)
    stdlib = http.client.HTTPConnection(address.hostname or stack.HOST, address.port)
    direct = compact(p.body)

    def post_stdlib() -> Any:
        stdlib.request("POST", stack.INFER_PATH, direct, {"content-type": "application/json"})
        return json.loads(stdlib.getresponse().read())

    levers = [
        *await timed_pair(
            ("DataFrame + model_rows + iloc + ServingClient.infer (before 07bea5c)",
             p.pandas_path),
            ("model_records + ServingClient.infer (as now)",
             lambda: p.serving.infer(model_records(p.profile_dumps(), p.indicators, p.today),
                                     request_id="id")),
        ),
        *await timed_pair(
            ("POST to MLServer: the app's httpx.Client, json=",
             lambda: p.http.post(stack.INFER_PATH, json=p.body).json()),
            ("POST to MLServer: stdlib http.client, keep-alive", post_stdlib),
        ),
    ]  # fmt: skip
    stdlib.close()
    whole = [
        await timed("GET /health", p.health),
        await timed("POST /prospects/score (by id)", by_id_request),
        *await timed_pair(
            ("POST /prospects/score-profiles", profiles_request),
            ("POST /prospects/score-profiles, its thread-pool call run inline",
             lambda: p.inline(profiles_request)),
        ),
    ]  # fmt: skip
    p.hops.inline = True
    profiled = {
        "POST /prospects/score-profiles": await profile_by_package(
            profiles_request, PROFILED_CALLS
        ),
        "POST /prospects/score (by id)": await profile_by_package(by_id_request, PROFILED_CALLS),
    }
    p.hops.inline = False
    return {
        "pages": await time_page_view(p),
        "profiles": pieces,
        "by id": extra_by_id,
        "levers": levers,
        "whole": whole,
        "hops": hops,
        "profiled": profiled,
    }


async def time_page_view(p: Pieces) -> list[list[Any]]:
    """Score the list once in this process, then time a page view and its parts."""
    from telescore.core.prospects import RankingQuery, rank

    call_list, store = p.call_list, p.app.state.prospect_store
    started = time.perf_counter()
    call_list.page(RankingQuery())  # scores everyone, in this process's CallList
    scored = (time.perf_counter() - started) * 1e6
    frame = call_list._frame  # the cached, sorted list
    query = RankingQuery(job="admin.", min_score=0.1, page=3)
    return [
        ["first view in this process: read + score everyone", scored, None],
        await timed("CallList.page whole (job, min score, page 3)", lambda: call_list.page(query)),
        await timed("  CallList.key() (cached reads)", call_list.key),
        await timed("  calls since the last look (nx-27017, every view)",
                    lambda: store.calls_since(None)),
        await timed("  rank: filter + slice of the sorted frame", lambda: rank(frame, query)),
        few("count_prospects: estimated_document_count (every 10 s inside key(), 5 calls)",
            store.count_prospects),
        few("  for comparison, before 07bea5c: count_documents (5 calls)",
            lambda: store.prospects.count_documents({})),
    ]  # fmt: skip


def few(label: str, call: Callable[[], Any], calls: int = 5) -> list[Any]:
    """Time a slow call a few times: [label, median µs, max µs]."""
    durations = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        durations.append((time.perf_counter() - started) * 1e6)
    return [label, statistics.median(durations), max(durations)]


def report_breakdown(report: Report, pieces: dict[str, Any]) -> None:
    """Print the pieces, the levers and the profiles."""
    columns = ["piece", "median us", "p99 us"]
    report.table(
        "(b)'s pieces, each timed alone in this process on the app's own objects",
        columns,
        pieces["profiles"],
        "the POSTs to MLServer include MLServer's own time and the loopback",
    )
    report.table("(c)'s extra pieces", columns, pieces["by id"])
    report.table(
        "A JSON page view's parts, in process",
        columns,
        pieces["pages"],
        "the two counts: their max in the p99 column",
    )
    report.table(
        "Levers: the same work done another way, each pair called in turn",
        columns,
        pieces["levers"],
        "paired difference: median of (second - first) over the pairs",
    )
    report.table(
        "Whole requests in process, straight into the ASGI app (no uvicorn, no client, no "
        "socket to the app)",
        columns,
        pieces["whole"],
    )
    for label, counted in pieces["hops"].items():
        listed = ", ".join(f"{name} x{count}" for name, count in counted.items())
        report.line(f"  thread-pool hops, {label}: {sum(counted.values())} ({listed})")
    for name, (rows, pauses) in pieces["profiled"].items():
        report.table(
            f"{name}: own time by package, cProfile over {PROFILED_CALLS} requests in process, "
            "hops inline (us per request; the profiler inflates Python code: read as shares)",
            ["where", "us per request"],
            rows,
        )
        collected = "; ".join(
            f"gen {gen}: {len(values)} collections, {sum(values):.1f} ms in all, "
            f"max {max(values, default=0.0):.2f} ms"
            for gen, values in pauses.items()
        )
        report.line(f"  garbage collector meanwhile: {collected}")


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="c=32 cell, per round")
    parser.add_argument("--latency-seconds", type=float, default=2.0, help="c=1 cell, per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-wrk", dest="wrk", action="store_false", help="httpx workers only")
    parser.add_argument("--page-views", type=int, default=200, help="of each: JSON, HTML")
    parser.add_argument("--prospects", type=int, default=None, help="seed only the first N")
    parser.add_argument("--prediction-log", action="store_true", help="MLServer logs to nx-27017")
    args = parser.parse_args()
    report = Report("app", {"settings": vars(args)})
    client = "wrk" if args.wrk and harness.wrk_available() else "httpx"
    with stack.Stack("app") as services:
        platform = start_platform(services, args.prospects, args.prediction_log, report)
        report.data["setup_seconds"] = platform.seconds
        prospect = the_prospect(platform)
        paths = calls(platform, prospect)
        for line in check_answers(paths):
            report.log(line)
        for call in paths.values():
            warm(call)
        drained(platform)
        report.data["idle_cores"] = idle = harness.idle_cores()
        report.log(f"app up on {platform.app.url}; other processes keep {idle:.2f} cores busy")

        def arm(call: Call) -> Callable[[], Cells]:
            def run() -> Cells:
                return {
                    c: measure(call, client, c, args.latency_seconds if c == 1 else args.seconds)
                    for c in CONCURRENCY
                }

            return run

        results = harness.run_rounds({k: arm(v) for k, v in paths.items()}, args.rounds, report.log)
        pages = measure_pages(report, platform, args.page_views)
        report.log("page views done; timing the pieces in process")
        pieces = asyncio.run(breakdown(platform, prospect, services.dir / "in-process"))
        drained(platform)
        counts = platform.mlserver.log_counts() if platform.mlserver.logged else {}

    report.line(
        "\nSet-up (not measured): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in platform.seconds.items())
        + f"; prospect {prospect.prospect_id}; prediction log "
        + ("on" if args.prediction_log else "off")
        + f"; other processes at idle {idle:.2f} cores"
    )
    report_scoring(report, results, client)
    report_pages(report, pages, platform.prospects)
    report_breakdown(report, pieces)
    if counts:
        report.line(
            f"\nPrediction log: {counts['journaled']:.0f} rows journaled, "
            f"{counts['written']:.0f} written, {counts['dead_lettered']:.0f} dead-lettered, "
            f"{counts['refused']:.0f} refused"
        )
    report.data["cells"] = {
        label: [{str(c): cell.as_dict() for c, cell in each.items()} for each in rounds]
        for label, rounds in results.items()
    }
    report.data["pages"] = pages
    latency = {
        label: {
            f"p50 c={c}": statistics.median(each[c].figures.p50_ms for each in rounds)
            for c in CONCURRENCY
        }
        for label, rounds in results.items()
    }
    tail = {
        label: {
            f"p99 c={c}": statistics.median(each[c].figures.p99_ms for each in rounds)
            for c in CONCURRENCY
        }
        for label, rounds in results.items()
    }
    report.save(
        [Panel("p50 (ms)", latency), Panel("p99 (ms)", tail)],
        "Scoring one prospect: direct MLServer vs through the app, 2 CPUs shared by all",
    )


if __name__ == "__main__":
    main()
