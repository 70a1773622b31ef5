"""The release guards' PromQL: built for one served version, parsed from Prometheus's answers.

What the queries compute, on series shaped like the runtime's, is checked by promtool
(tests/deploy/test_release_guard_promql.py); a live Prometheus over two MLServers by
tests/integration/serving/test_release_guards_prometheus.py.
"""

from __future__ import annotations

import pytest

from telescore.io.prometheus import (
    MonitoringApiError,
    growth_since_start,
    scalar_of,
    serving_queries,
)


def test_every_query_selects_the_model_and_version_and_sums_over_every_replica():
    # given a challenger's version / when its queries are built for a 10-minute release
    queries = serving_queries("telemarketing-challenger", "12", 600)
    # then there is one per figure the guards judge or record
    assert set(queries) == {
        "requests",
        "failures",
        "refused",
        "latency_p50_seconds",
        "latency_p99_seconds",
    }, f"the figures queried: {sorted(queries)}"
    selector = '{model="telemarketing-challenger",version="12"}'
    for name, metric in (
        ("requests", "telescore_serving_requests_total"),
        ("failures", "telescore_serving_failures_total"),
        ("refused", "telescore_serving_refused_total"),
    ):
        query = queries[name]
        assert query.startswith("sum by (model) ("), f"{name} is not summed per model: {query}"
        assert f"{metric}{selector}[600000ms]" in query, f"{name}: its series or range: {query}"
        assert "offset 600000ms" in query, f"{name} does not start at the release's start: {query}"
        assert "rate(" not in query and "increase(" not in query, (
            f"{name} would extrapolate, and lose a new series' first scrape: {query}"
        )
    for name, quantile in (("latency_p50_seconds", "0.5"), ("latency_p99_seconds", "0.99")):
        query = queries[name]
        assert query.startswith(f"histogram_quantile({quantile}, sum by (model, le) ("), query
        buckets = f"telescore_serving_request_duration_seconds_bucket{selector}[600000ms]"
        assert buckets in query, query


def test_a_series_born_in_the_range_counts_from_zero():
    # given a counter's selector / when its growth since the start is built
    growth = growth_since_start("x", 60)
    # then series alive at the start grow from their value then, the others from zero
    assert growth == (
        "(max_over_time(x[60000ms]) - last_over_time(x[1h] offset 60000ms))"
        " or max_over_time(x[60000ms])"
    ), growth


def test_a_release_starts_to_the_millisecond():
    # given releases that began 2.3 s and 0 s ago / when queried
    # then their start is not moved to a whole second (a replica first scraped in that second
    # would count from zero the requests it served before), and a 0 s range is still valid
    assert "offset 2300ms" in serving_queries("telemarketing", "1", 2.3)["requests"]
    assert "[1ms]" in serving_queries("telemarketing", "1", 0)["requests"], "a 0s range is invalid"


@pytest.mark.parametrize(
    ("version", "escaped"),
    [('1"} or vector(1) #', '1\\"} or vector(1) #'), ("a\\b", "a\\\\b"), ("a\nb", "a\\nb")],
)
def test_label_values_are_escaped_so_a_version_cannot_change_the_query(version, escaped):
    # given a version holding PromQL's quote, backslash or newline
    query = serving_queries("telemarketing", version, 60)["requests"]
    # then it stays inside its string
    assert f'version="{escaped}"}}' in query, f"the version escaped its string: {query}"


def test_the_one_value_of_a_result_is_read_as_a_number():
    # given Prometheus's answer to a sum: one series, its value a string
    result = [{"metric": {"model": "telemarketing"}, "value": [1700000000.0, "42"]}]
    # then its number is read
    assert scalar_of(result) == 42.0, "the value should be read"


def test_no_series_or_no_number_is_none():
    # given no series (no request yet), or a quantile of an empty histogram (NaN)
    nan = [{"metric": {}, "value": [1700000000.0, "NaN"]}]
    infinite = [{"metric": {}, "value": [1700000000.0, "+Inf"]}]
    # then there is no figure, rather than zero or NaN
    assert scalar_of([]) is None, "no series should be no figure"
    assert scalar_of(nan) is None, "NaN should be no figure"
    assert scalar_of(infinite) is None, "+Inf should be no figure"
    assert scalar_of([{"metric": {}, "value": [0, "0"]}]) == 0.0, "0 is a figure"


def test_more_than_one_series_is_refused():
    # given a result that is not one series per model (the query was not summed as expected)
    result = [{"metric": {"model": m}, "value": [0, "1"]} for m in ("a", "b")]
    # when read / then it is refused, not silently added up
    with pytest.raises(MonitoringApiError, match="expected one series"):
        scalar_of(result)
