"""The model repository writer: server settings, one folder per alias, no stale folders."""

from __future__ import annotations

import json
from pathlib import Path

from mlserver.settings import ModelSettings, Settings

from telescore.jobs.model_repository import (
    RUNTIME,
    ServerOptions,
    existing_runtime_options,
    served_models,
    write_model_repository,
)
from telescore.serving.runtime import RuntimeOptions


def test_champion_and_challenger_get_a_folder_each_mlserver_can_read(tmp_path: Path) -> None:
    # given both aliases in the registry
    models = served_models({"champion", "challenger"})

    # when writing the repository
    root = write_model_repository(
        tmp_path / "repo",
        models,
        ServerOptions(http_port=9001, grpc_port=9002, metrics_port=9003),
        RuntimeOptions(max_rows=50, prediction_log=False),
    )

    # then MLServer's own settings classes accept what was written
    server = Settings.parse_file(str(root / "settings.json"))
    assert (server.http_port, server.grpc_port, server.metrics_port) == (9001, 9002, 9003)
    assert server.parallel_workers == 0, "in-process scoring is the default"
    assert server.debug is False, "access logs cost a line per request"
    assert server.gzip_enabled is False, "gzip gains nothing on a few hundred bytes"
    champion = ModelSettings.parse_file(str(root / "telemarketing" / "model-settings.json"))
    challenger = ModelSettings.parse_file(
        str(root / "telemarketing-challenger" / "model-settings.json")
    )
    assert champion.parameters.uri == "models:/telemarketing@champion"
    assert challenger.parameters.uri == "models:/telemarketing@challenger"
    assert champion.parameters.extra == {
        "route": "champion",
        "max_rows": 50,
        "prediction_log": False,
    }
    assert challenger.parameters.extra["route"] == "challenger"
    assert (
        json.loads((root / "telemarketing" / "model-settings.json").read_text())["implementation"]
        == RUNTIME
    )
    assert champion.max_batch_size <= 1, "adaptive batching must stay off"


def test_a_challenger_alias_that_is_gone_loses_its_folder(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write_model_repository(root, served_models({"champion", "challenger"}))

    write_model_repository(root, served_models({"champion"}))

    assert (root / "telemarketing").is_dir(), "champion kept"
    assert not (root / "telemarketing-challenger").exists(), "stale challenger folder left"


def test_rewriting_models_keeps_the_server_settings_and_runtime_options(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write_model_repository(
        root, served_models({"champion"}), ServerOptions(http_port=9101), RuntimeOptions(max_rows=7)
    )

    write_model_repository(root, served_models({"champion", "challenger"}))

    assert json.loads((root / "settings.json").read_text())["http_port"] == 9101
    assert existing_runtime_options(root) == RuntimeOptions(max_rows=7)


def test_no_secret_is_written_unless_given(tmp_path: Path) -> None:
    root = write_model_repository(tmp_path / "repo", served_models({"champion"}))

    extra = json.loads((root / "telemarketing" / "model-settings.json").read_text())["parameters"][
        "extra"
    ]
    assert "mongodb_uri" not in extra, "the MongoDB URI belongs in the environment"
