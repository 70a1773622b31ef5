"""What the web app adds to a direct MLServer call, and how fast a ranked page is, in one run.

    .venv/bin/python -m benchmarks.app [--seconds 3] [--latency-seconds 2] [--rounds 5] [--no-wrk]
                                       [--page-views 200] [--prospects N]

One prospect scored at c=1 and c=32 in paired rounds, by MLServer directly and through the app
(posted profile, prospect id); then the ranked call list's views over every prospect. What
each path sends and why: docs/benchmarks/app.md. Writes benchmarks/results/app.{json,png}.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from benchmarks import harness, stack
from benchmarks.report import Panel, Report

DIRECT, PROFILES, BY_ID = "(a) MLServer V2, direct", "(b) app score-profiles", "(c) app score by id"
FLOOR = "app GET /health (its floor)"
CONCURRENCY = (1, 32)
TARGET_ADDED_P50_MS, TARGET_PAGE_MS = 2.0, 100.0
PARTIES = ("app", "mlserver", "shipper", "db", "client", "other")
API_KEY_HEADER = "X-API-Key"
SEED = 20261124
Cells = dict[int, harness.Cell]
"""One round of one path: a cell per concurrency."""


@dataclass(frozen=True)
class Platform:
    """The running services, and what the requests need."""

    services: stack.Stack
    mlserver: stack.Server
    app: stack.Server
    api_key: str
    secret: str
    prospects: int


def start_platform(services: stack.Stack, prospects: int | None, report: Report) -> Platform:
    """Start MLflow (with the champion), nx-27017, MLServer and the app; seed the campaign."""
    from telescore.io.access_store import AccessStore
    from telescore.io.prospect_store import ProspectStore
    from telescore.jobs.access import create_api_key
    from telescore.jobs.campaign import seed_prospects
    from telescore.services.embedded import outcomes_api
    from telescore.services.processes import free_port

    context, (_, registered) = services.context, services.champion()
    report.log(f"registered {registered.uri} as champion")
    mlserver = services.mlserver("MLServer")
    mlserver.process.launch()  # seeding needs only nx-27017: it runs while MLServer loads
    services.callback(mlserver.process.stop)
    store = context.store(ProspectStore, timeout_ms=60_000)
    stored, revision = seed_prospects(store, stack.DATASET, prospects, by="benchmark")
    api_key = create_api_key(context.store(AccessStore), "benchmark", "caller").key
    report.log(f"seeded {stored:,} prospects, indicators revision {revision}")
    mlserver.process.wait_healthy()
    # The app's settings, from the environment only (no developer's .env). The secret is known
    # to the benchmark, so that it can sign a caller's session cookie for the HTML page.
    secret, port = secrets.token_urlsafe(48), free_port()
    env = stack.SERVER_ENV | {
        "TELESCORE_ENV_FILE": str(services.dir / "no.env"),
        "TELESCORE_MONGODB_URI": context.mongodb_uri,
        "TELESCORE_MONGODB_DATABASE": context.mongodb_database,
        "TELESCORE_SERVING_URL": mlserver.url,
        "TELESCORE_MLFLOW_TRACKING_URI": context.tracking_uri,
        "TELESCORE_STATE_DIR": str(services.dir / "app"),
        "TELESCORE_API_SECRET_KEY": secret,
    }
    process = outcomes_api(services.dir / "app", port, stack.HOST, env)
    app = stack.Server("app", process, f"http://{stack.HOST}:{port}")
    services.start(app)
    return Platform(services, mlserver, app, api_key, secret, stored)


def targets(platform: Platform) -> dict[str, harness.Target]:
    """The four paths, all about the first prospect, each with the CPU parties."""
    from telescore.core.prospects import PROSPECT_FIELDS, model_records
    from telescore.io.prospect_store import ProspectStore
    from telescore.io.serving_client import inference_request
    from telescore.jobs.indicators import read_indicators

    store = platform.services.context.store(ProspectStore)
    document, indicators = store.prospects.find_one({}), read_indicators(store)
    if document is None or indicators is None:
        raise RuntimeError("the campaign was not seeded")
    prospect_id, profile = str(document["_id"]), {k: document[k] for k in PROSPECT_FIELDS}
    # The request the app's ServingClient sends, as `ProspectScorer.score_profiles` builds it:
    # the prospect's fields, the app's calendar day, the indicators in force; its own request id.
    rows = model_records([profile], indicators.indicators, datetime.now(UTC).date())
    app, key = platform.app.url, {API_KEY_HEADER: platform.api_key}
    # Every process group a request may keep busy, the shipper apart from MLServer.
    mlserver = platform.mlserver.parties(platform.services.mongodb(), "mlserver")
    parties = {"app": harness.Party(platform.app.pid)} | mlserver
    direct = inference_request(rows, request_id=str(uuid.uuid4()))
    requests = {
        DIRECT: (platform.mlserver.url + stack.INFER_PATH, direct),
        PROFILES: (
            f"{app}/prospects/score-profiles",
            {"profiles": [profile | {"prospect_id": prospect_id}]},
        ),
        BY_ID: (f"{app}/prospects/score", {"prospect_ids": [prospect_id]}),
    }
    paths = {
        label: harness.Target(
            "http", url, stack.compact(body), parties, headers={} if label == DIRECT else key
        )
        for label, (url, body) in requests.items()
    }
    return paths | {FLOOR: harness.Target("http", f"{app}/health", b"", parties, None, "GET")}


def spread(values: list[float]) -> str:
    """A median with the range of the rounds, e.g. '+1.23 ms (+1.10..+1.40)'."""
    return harness.spread(values, "{:+.2f}", " ms")


def report_scoring(
    report: Report, results: dict[str, list[Cells]], client: str
) -> dict[str, dict[str, dict[str, float]]]:
    """Print the side-by-side table and what (b) and (c) add to (a); return the chart's bars."""
    rows, added = [], {}
    bars: dict[str, dict[str, dict[str, float]]] = {"p50": {}, "p99": {}}
    for concurrency in CONCURRENCY:
        reference = [each[concurrency].figures for each in results[DIRECT]]
        for label, rounds in results.items():
            cells = [each[concurrency] for each in rounds]
            p50 = [c.figures.p50_ms - r.p50_ms for c, r in zip(cells, reference, strict=True)]
            p99 = [c.figures.p99_ms - r.p99_ms for c, r in zip(cells, reference, strict=True)]
            ratio = harness.paired([c.figures.p50_ms for c in cells], [r.p50_ms for r in reference])
            added[label, concurrency] = p50
            compared = [spread(p50), spread(p99), harness.spread(ratio)]
            compared = ["", "", ""] if label == DIRECT else compared
            each = harness.medians(cells, PARTIES)
            figures = [each[key] for key in ("p50", "p99", "req/s", "app us", "mlserver us")]
            cores = [each[party] for party in PARTIES]
            rows.append([label, concurrency, *figures[:3], *compared, *figures[3:], *cores])
            rows[-1].append(each["errors"])
            for quantile, series in bars.items():
                series.setdefault(label, {})[f"{quantile} c={concurrency}"] = each[quantile]
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
            values = added[label, concurrency]
            verdict = "meets " if statistics.median(values) <= TARGET_ADDED_P50_MS else "misses"
            report.line(f"  {verdict} {label}, c={concurrency}: {spread(values)}")
    report.data["added_p50_ms"] = {f"{k[0]} c={k[1]}": v for k, v in added.items()}
    return bars


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


def measure_pages(report: Report, platform: Platform, views: int) -> dict[str, Any]:
    """Time the first (scoring) view, then views of the JSON list and the page, interleaved."""
    import httpx

    from telescore.app.security import SESSION_COOKIE, Sessions
    from telescore.core.access import Principal

    cookie, _ = Sessions(platform.secret, 3600).new(Principal("benchmark", "caller", "user"))
    key, cookies = {API_KEY_HEADER: platform.api_key}, {SESSION_COOKIE: cookie}
    # The first view scores everyone: minutes on a slow machine.
    client = httpx.Client(base_url=platform.app.url, headers=key, cookies=cookies, timeout=600)

    def get(path: str, params: Mapping[str, Any]) -> float:
        """GET once; return its milliseconds, raising on a failure."""
        started = time.perf_counter()
        response = client.get(path, params=params)
        elapsed = (time.perf_counter() - started) * 1000.0
        expected = '"prospects"' if path == "/prospects" else "</html>"
        if response.status_code != 200 or expected not in response.text:
            raise RuntimeError(f"GET {path} {params}: HTTP {response.status_code}: {response.text}")
        return elapsed

    figures: dict[str, Any] = {"JSON views": [], "HTML views": []}
    with client:
        figures["first JSON view"] = get("/prospects", {"page": 1})
        report.log(f"first view: {figures['first JSON view'] / 1000:.1f} s")
        # The page's first view loads the scoring version from MLflow, for the reasons.
        figures["first HTML view"] = get("/", {"page": 1})
        for number, query in enumerate(page_queries(views, random.Random(SEED))):
            order = [("JSON views", "/prospects"), ("HTML views", "/")]
            for kind, path in order if number % 2 == 0 else order[::-1]:
                figures[kind].append(get(path, query))
    return figures


def report_pages(report: Report, figures: dict[str, Any], prospects: int) -> None:
    """Print the page views' table."""
    rows: list[list[Any]] = [
        ["first view (JSON), scores everyone", 1, figures["first JSON view"]],
        ["first view of the page (HTML): loads the model for reasons", 1,
         figures["first HTML view"]],
    ]  # fmt: skip
    for label, key in (("JSON list, GET /prospects", "JSON views"), ("page, GET /", "HTML views")):
        values = figures[key]
        rows.append([
            label, len(values), statistics.median(values), harness.percentile(values, 99),
            max(values), sum(value < TARGET_PAGE_MS for value in values) / len(values),
        ])  # fmt: skip
    report.table(
        f"Ranked pages over {prospects:,} prospects (page size 25; ms)",
        ["view", "views", "p50 / time", "p99", "max", f"share < {TARGET_PAGE_MS:g} ms"],
        rows,
        "views with different pages and filters (job, age band, min score, not called), JSON "
        "and HTML interleaved, one at a time",
    )
    for key in ("JSON views", "HTML views"):
        p50, p99 = statistics.median(figures[key]), harness.percentile(figures[key], 99)
        verdict = "meets " if p99 < TARGET_PAGE_MS else "misses"
        report.line(
            f"  {verdict} a ranked page in < {TARGET_PAGE_MS:g} ms ({key}): p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="c=32 cell, per round")
    parser.add_argument("--latency-seconds", type=float, default=2.0, help="c=1 cell, per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-wrk", dest="wrk", action="store_false", help="httpx workers only")
    parser.add_argument("--page-views", type=int, default=200, help="of each: JSON, HTML")
    parser.add_argument("--prospects", type=int, default=None, help="seed only the first N")
    args = parser.parse_args()
    report = Report("app", {"settings": vars(args)})
    client = "wrk" if args.wrk and harness.wrk_available() else "httpx"
    with stack.Stack("app") as services:
        platform = start_platform(services, args.prospects, report)
        paths = targets(platform)
        for target in paths.values():
            harness.warm(target)
        report.data["idle_cores"] = idle = harness.idle_cores()
        report.log(f"app up on {platform.app.url}; other processes keep {idle:.2f} cores busy")

        seconds = dict(zip(CONCURRENCY, (args.latency_seconds, args.seconds), strict=True))
        arms: dict[str, Callable[[], Cells]] = {
            label: lambda t=target: {
                c: harness.measure(t, client, c, s) for c, s in seconds.items()
            }
            for label, target in paths.items()
        }
        results = harness.run_rounds(arms, args.rounds, report.log)
        pages = measure_pages(report, platform, args.page_views)

    report.line(f"\nPrediction log off; other processes at idle {idle:.2f} cores")
    bars = report_scoring(report, results, client)
    report_pages(report, pages, platform.prospects)
    report.data["cells"] = {
        label: [{str(c): cell.as_dict() for c, cell in each.items()} for each in rounds]
        for label, rounds in results.items()
    }
    report.data["pages"] = pages
    panels = [Panel(f"{quantile} (ms)", values) for quantile, values in bars.items()]
    report.save(panels, "Scoring one prospect: direct MLServer vs through the app, 2 CPUs shared")


if __name__ == "__main__":
    main()
