"""`telescore up` starts Prometheus and Alertmanager only once MLServer serves.

Started before it, Prometheus would find MLServer's metrics port closed and, a minute later,
page ops with MLServerDown for a normal start-up. The services themselves are replaced by
recorders: what is under test is the order the command starts them in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from telescore import cli
from telescore.jobs import platform
from telescore.jobs import serving as deployment
from telescore.jobs.model_repository import CHAMPION_MODEL


def test_up_starts_monitoring_after_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a platform whose services record when they are started
    monkeypatch.setenv("TELESCORE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TELESCORE_ENV_FILE", str(tmp_path / "no.env"))
    started: list[str] = []
    urls = platform.PlatformUrls(
        mlflow="http://127.0.0.1:1",
        prefect="http://127.0.0.1:2",
        mongodb="mongodb://127.0.0.1:3",
        evidently="http://127.0.0.1:4",
        api="http://127.0.0.1:5",
    )
    serving = deployment.ServingStatus("u", "g", "m", {CHAMPION_MODEL: "1"}, {})

    def record(name: str, answer: Any) -> Any:
        def started_now(*_: Any, **__: Any) -> Any:
            started.append(name)
            return answer

        return started_now

    monkeypatch.setattr(platform, "bring_up", record("services", urls))
    monkeypatch.setattr(deployment, "start_serving", record("mlserver", serving))
    monkeypatch.setattr(platform, "start_monitoring", record("prometheus", []))
    monkeypatch.setattr(deployment, "status", lambda _: serving)
    # when `telescore up` runs
    result = CliRunner().invoke(cli.app, ["up"])
    # then it started the services, then MLServer, then Prometheus and Alertmanager
    assert result.exit_code == 0, result.output
    assert started == ["services", "mlserver", "prometheus"], (
        f"Prometheus should start after MLServer serves: {started}"
    )
