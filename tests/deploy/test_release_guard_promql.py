"""The release guards' PromQL, evaluated by promtool on series shaped like the runtime's.

Every series of the runtime's counters and histogram is one MLServer process's (its `process`
label), so it never resets; a release's figures are each series' growth since the release
began, summed over every replica. The cases a fleet produces: two replicas, a challenger whose
series are all born in the release (first scraped with requests already counted), a replica
restarted mid-release (a new process, a new series; the old one ends), an older version of the
same model name, and traffic before the release began.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from deploy_checks import PROMTOOL

from telescore.io.prometheus import serving_queries

INTERVAL = "15s"
# The release began at 5m (sample 20) and is judged at 10m (sample 40): a 300 s range.
START_SAMPLE, END = 20, "10m"
RANGE_SECONDS = 300
CHAMPION = ("telemarketing", "3")
CHALLENGER = ("telemarketing-challenger", "4")


def _series(metric: str, model: tuple[str, str], process: str, values: str, **labels: str) -> dict:
    extra = "".join(f',{name}="{value}"' for name, value in labels.items())
    name, version = model
    return {
        "series": f'{metric}{{process="{process}",model="{name}",version="{version}"{extra}}}',
        "values": values,
    }


def _born(first: int, values: str) -> str:
    """Values of a series first scraped at sample `first` (absent before)."""
    return f"_x{first} {values}"


def _fleet() -> list[dict]:
    requests, failures = "telescore_serving_requests_total", "telescore_serving_failures_total"
    refused = "telescore_serving_refused_total"
    buckets = "telescore_serving_request_duration_seconds_bucket"
    born = START_SAMPLE + 1
    return [
        # the champion, on replicas a and b since before the release: 2 requests a scrape each
        _series(requests, CHAMPION, "a1", "0+2x40"),
        _series(requests, CHAMPION, "b1", "0+2x40"),
        _series(failures, CHAMPION, "a1", "0x40"),
        _series(failures, CHAMPION, "b1", "0x40"),
        _series(buckets, CHAMPION, "a1", "0+1x40", le="0.0005"),
        _series(buckets, CHAMPION, "a1", "0+1x40", le="+Inf"),
        _series(buckets, CHAMPION, "b1", "0+1x40", le="0.0005"),
        _series(buckets, CHAMPION, "b1", "0+1x40", le="+Inf"),
        # the challenger on replica a, first scraped in the release with a request counted
        _series(requests, CHALLENGER, "a1", _born(born, "1+1x19")),
        _series(failures, CHALLENGER, "a1", _born(born, "0x19")),
        _series(refused, CHALLENGER, "a1", _born(born, "1+1x19")),
        _series(buckets, CHALLENGER, "a1", _born(born, "1+1x19"), le="0.001"),
        _series(buckets, CHALLENGER, "a1", _born(born, "2+2x19"), le="0.01"),
        _series(buckets, CHALLENGER, "a1", _born(born, "2+2x19"), le="+Inf"),
        # on replica b it fails; b restarts halfway (process b2), b1's series ends
        _series(requests, CHALLENGER, "b1", _born(born, "3+3x9")),
        _series(failures, CHALLENGER, "b1", _born(born, "1+1x9")),
        _series(requests, CHALLENGER, "b2", _born(born + 10, "0+1x9")),
        _series(failures, CHALLENGER, "b2", _born(born + 10, "0+1x9")),
        # the version challenger before this one, under the same model name: not this release's
        _series(requests, ("telemarketing-challenger", "2"), "a1", "0+10x40"),
        _series(failures, ("telemarketing-challenger", "2"), "a1", "0+10x40"),
    ]


def _sample(model: str, value: float) -> dict:
    return {"labels": f'{{model="{model}"}}', "value": value}


def test_the_guards_queries_count_every_replica_since_the_release_began(tmp_path: Path):
    # given the fleet's series, and the guards' queries of each arm over the release
    champion = serving_queries(*CHAMPION, RANGE_SECONDS)
    challenger = serving_queries(*CHALLENGER, RANGE_SECONDS)
    # challenger latencies: 20 requests at most 1 ms, 20 more at most 10 ms (replica a)
    # (as Prometheus interpolates in the bucket holding the 99th percentile's rank)
    p99 = 0.001 + (0.01 - 0.001) * ((0.99 * 40 - 20) / 20)
    expected = [
        # 40 requests a replica since the release began (80 at 10m, 40 at 5m), none before
        (champion["requests"], _sample("telemarketing", 80)),
        (champion["failures"], _sample("telemarketing", 0)),
        # every request of a series born in the release counts, from zero: 20 on a1, 30 on
        # b1 before it stopped, 9 on b2 after it started; failures: 10 on b1, 9 on b2
        (challenger["requests"], _sample("telemarketing-challenger", 59)),
        (challenger["failures"], _sample("telemarketing-challenger", 19)),
        (challenger["refused"], _sample("telemarketing-challenger", 20)),
        # the quantiles of the histograms summed over the replicas
        (champion["latency_p99_seconds"], _sample("telemarketing", 0.99 * 0.0005)),
        (challenger["latency_p50_seconds"], _sample("telemarketing-challenger", 0.001)),
        (challenger["latency_p99_seconds"], _sample("telemarketing-challenger", p99)),
    ]
    tests = tmp_path / "release-guards.test.yml"
    tests.write_text(
        yaml.safe_dump(
            {
                "rule_files": [],
                "evaluation_interval": INTERVAL,
                "tests": [
                    {
                        "interval": INTERVAL,
                        "input_series": _fleet(),
                        "promql_expr_test": [
                            {"expr": expr, "eval_time": END, "exp_samples": [sample]}
                            for expr, sample in expected
                        ],
                    }
                ],
            },
            sort_keys=False,
        )
    )
    # when promtool evaluates them
    result = PROMTOOL.run("test", "rules", tests, cwd=tmp_path)
    # then each figure is the fleet's, exactly
    assert result.passed, f"the guards' queries computed other figures:\n{result.output}"


def test_promtool_would_catch_a_wrong_figure(tmp_path: Path):
    # given the same fleet, and a count the queries do not give (increase() would give it)
    tests = tmp_path / "wrong.test.yml"
    tests.write_text(
        yaml.safe_dump(
            {
                "rule_files": [],
                "tests": [
                    {
                        "interval": INTERVAL,
                        "input_series": _fleet(),
                        "promql_expr_test": [
                            {
                                "expr": serving_queries(*CHALLENGER, RANGE_SECONDS)["requests"],
                                "eval_time": END,
                                "exp_samples": [_sample("telemarketing-challenger", 58)],
                            }
                        ],
                    }
                ],
            }
        )
    )
    # when evaluated / then promtool fails it: the test above can fail
    result = PROMTOOL.run("test", "rules", tests, cwd=tmp_path)
    assert not result.passed, f"promtool passed a wrong count:\n{result.output}"
