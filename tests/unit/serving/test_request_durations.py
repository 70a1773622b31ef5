"""The runtime's time per request, as MLServer's metrics port exposes it (a histogram)."""

from __future__ import annotations

import uuid

from prometheus_client import CollectorRegistry, generate_latest

from telescore.serving.shipping import prediction_log_metrics, request_counter


def _exposed() -> str:
    registry = CollectorRegistry()
    prediction_log_metrics(registry)
    return generate_latest(registry).decode()


def test_request_durations_are_a_histogram_per_model_and_version():
    # given requests answered in 3 ms and 40 ms, one failed in 0.2 ms, one refused in 0.1 ms
    model = f"model-{uuid.uuid4().hex[:8]}"
    counter = request_counter()
    counter.count(model, "7", "answered", seconds=0.003)
    counter.count(model, "7", "answered", seconds=0.04)
    counter.count(model, "7", "failed", seconds=0.0002)
    counter.count(model, "7", "refused", seconds=0.0001)
    # when the metrics are scraped
    text = _exposed()
    # then each bucket counts the accepted requests at or under its bound, failed ones
    # included; the refused one (the caller's invalid input) is not the model's time
    labels = f'model="{model}",process="{counter.process}",version="7"'
    prefix = "telescore_serving_request_duration_seconds"
    expected = {"0.0005": 1.0, "0.0025": 1.0, "0.005": 2.0, "0.025": 2.0, "0.05": 3.0, "+Inf": 3.0}
    for bound, count in expected.items():
        line = f'{prefix}_bucket{{le="{bound}",{labels}}} {count}'
        assert line in text, f"missing {line!r} in:\n{text}"
    assert f"{prefix}_count{{{labels}}} 3.0" in text, "the count is not every accepted request"
    assert f"{prefix}_sum{{{labels}}} 0.0432" in text, "the sum is not the total time"


def test_requests_without_a_duration_are_counted_but_not_timed():
    # given a request counted with no duration
    model = f"model-{uuid.uuid4().hex[:8]}"
    request_counter().count(model, "1", "answered")
    # when scraped / then it is a request, with no histogram of its own
    text = _exposed()
    assert f'model="{model}",process="{request_counter().process}",version="1"}} 1.0' in text, (
        "the request is not counted"
    )
    assert f'telescore_serving_request_duration_seconds_count{{model="{model}"' not in text, (
        "a histogram was made without any duration"
    )
