"""One configuration: MLServer's runtime reads the settings the CLI reads, `.env` included."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from telescore.io.context import Context
from telescore.io.prediction_store import PredictionStore
from telescore.io.serving_client import ServingClient
from telescore.jobs import platform
from telescore.jobs.serving import start_serving
from telescore.services.processes import ServiceProcess, free_port, wait_until

if TYPE_CHECKING:  # fixture types; conftest modules are not importable at run time
    from tests.integration.serving_fixtures import RegisteredVersions

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_prediction_lands_in_the_database_the_project_env_file_names(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mongodb: ServiceProcess,
    mlflow_tracking_uri: str,
    registered_versions: RegisteredVersions,
) -> None:
    # given a project whose .env names a database of its own (and ports of its own)
    project = tmp_path / "project"
    project.mkdir()
    database = f"from_dotenv_{uuid.uuid4().hex[:8]}"
    settings_lines = {
        "TELESCORE_STATE_DIR": project / ".telescore",
        "TELESCORE_MONGODB_URI": mongodb.uri,  # type: ignore[attr-defined]
        "TELESCORE_MONGODB_DATABASE": database,
        "TELESCORE_MLFLOW_TRACKING_URI": mlflow_tracking_uri,
        "TELESCORE_SERVING_HTTP_PORT": free_port(),
        "TELESCORE_SERVING_GRPC_PORT": free_port(),
        "TELESCORE_SERVING_METRICS_PORT": free_port(),
    }
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings_lines.items()))
    monkeypatch.chdir(project)
    monkeypatch.delenv("TELESCORE_ENV_FILE", raising=False)
    ctx = Context.from_environment()  # as the CLI does, from the project folder
    assert ctx.mongodb_database == database, "the CLI reads the project's .env"

    try:
        # when the control plane starts MLServer, as `telescore serve start` does, and it scores
        served = start_serving(ctx)
        assert platform.running_pid(ctx, "mlserver-reconciler") is not None, (
            "MLServer's reconciler should run next to it, recorded for `telescore down`"
        )
        with ServingClient(served.url) as client:
            scored = client.infer(registered_versions.features.head(2))

        # then the predictions land where the CLI reads: the database the .env names
        store = ctx.store(PredictionStore)
        wait_until(
            lambda: store.count({"_id": {"$in": scored.prediction_ids}}) == 2,
            60,
            what="the predictions in the .env's database",
        )
        with PredictionStore(ctx.mongodb_uri, "telescore") as default:
            assert default.count({"_id": {"$in": scored.prediction_ids}}) == 0, (
                "the runtime wrote to the default database, not the .env's"
            )
    finally:
        stopped = platform.bring_down(ctx)
        ctx.close()
    assert "mlserver-reconciler" in stopped, f"`telescore down` left the reconciler: {stopped}"
