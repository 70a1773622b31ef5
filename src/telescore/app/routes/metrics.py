"""`/metrics`: the app's Prometheus metrics, for the scraper holding the metrics token."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from telescore.app.deps import CallListDep, LoopDep, MetricsDep, requires_metrics_token

router = APIRouter(
    tags=["health"],
    dependencies=[Depends(requires_metrics_token)],
    responses={401: {"description": "No bearer token, or not the app's metrics token"}},
)


@router.get("/metrics", response_class=Response)
def metrics(metrics: MetricsDep, call_list: CallListDep, loop: LoopDep) -> Response:
    """Return the app's metrics in Prometheus's text format (a bearer token is required).

    The loop's figures are read from MongoDB now (a sync route: in the thread pool).
    """
    metrics.call_list_scored(call_list.scored_at)
    metrics.read_loop_with(loop.read)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
