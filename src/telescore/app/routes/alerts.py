"""The alerts ops were sent: the newest the local receiver logged (firing and resolved)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool

from telescore.app.deps import SettingsDep, requires
from telescore.app.errors import API_ERRORS
from telescore.io.alert_log import AlertLog, alert_log_path

router = APIRouter(tags=["alerts"], responses=API_ERRORS)


@router.get("/alerts", dependencies=[Depends(requires("ops"))])
async def recent_alerts(
    settings: SettingsDep, limit: int = Query(default=20, ge=1, le=200)
) -> list[dict[str, Any]]:
    """Return the newest alerts Alertmanager sent the local receiver, newest first (ops).

    Empty where Alertmanager notifies elsewhere (compose, Kubernetes: chat and e-mail).
    """
    log = AlertLog(alert_log_path(settings.project.state_dir.resolve()))
    return await run_in_threadpool(log.latest, limit)
