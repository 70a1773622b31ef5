"""Alerts as Alertmanager notifies them (its webhook, version 4), and as telescore records them.

Alertmanager posts a group of alerts at a time: each alert firing or resolved, with the labels
and annotations of the rule that fired it (prometheus/telescore.rules.yml). The local receiver
keeps one record per alert per notification, so the log reads as what operators were told.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_ALERTS_PER_NOTIFICATION: Final = 1000
"""More alerts in one notification are refused (Alertmanager's `max_alerts` bounds its own)."""
MAX_LABEL_TEXT: Final = 4096
"""A label or annotation longer than this is refused: rules write sentences, not documents."""

AlertStatus = Literal["firing", "resolved"]
Text = Annotated[str, StringConstraints(max_length=MAX_LABEL_TEXT)]


class NotifiedAlert(BaseModel):
    """One alert of a notification."""

    # Alertmanager adds fields over its versions; what telescore reads is checked, the rest kept
    # out of the record.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    status: AlertStatus
    labels: dict[Text, Text] = Field(max_length=64)
    annotations: dict[Text, Text] = Field(default_factory=dict, max_length=64)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    fingerprint: str = Field(default="", max_length=64)


class Notification(BaseModel):
    """The body of Alertmanager's webhook (version 4)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    version: Literal["4"]
    status: AlertStatus
    receiver: str = Field(max_length=256)
    alerts: list[NotifiedAlert] = Field(max_length=MAX_ALERTS_PER_NOTIFICATION)


def alert_records(notification: Notification, received_at: datetime) -> list[dict[str, Any]]:
    """Return one record per alert of `notification`: what fired, how bad, what it said."""
    return [
        {
            "received_at": received_at.isoformat(),
            "status": alert.status,
            "alertname": alert.labels.get("alertname", ""),
            "severity": alert.labels.get("severity", ""),
            "summary": alert.annotations.get("summary", ""),
            "description": alert.annotations.get("description", ""),
            "starts_at": alert.starts_at.isoformat(),
            # Alertmanager sends year 1 for "not ended": a firing alert has no end yet.
            "ends_at": alert.ends_at.isoformat()
            if alert.ends_at is not None and alert.status == "resolved"
            else None,
            "labels": dict(alert.labels),
            "fingerprint": alert.fingerprint,
            "receiver": notification.receiver,
        }
        for alert in notification.alerts
    ]
