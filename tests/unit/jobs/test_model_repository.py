"""The model repository writer: server settings, one folder per alias, no stale folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlserver.settings import ModelSettings, Settings

from telescore.io.registry import ModelVersionRef
from telescore.jobs.model_repository import (
    RUNTIME,
    LogitOffset,
    ServerOptions,
    champion_offset,
    existing_runtime_options,
    served_models,
    served_offset,
    write_logit_offset,
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


def _extra(root: Path, name: str) -> dict[str, object]:
    return json.loads((root / name / "model-settings.json").read_text())["parameters"]["extra"]


def _version(number: str, **tags: str) -> ModelVersionRef:
    return ModelVersionRef("telemarketing", number, tags=tags)


def test_the_champions_offset_is_its_own_and_survives_a_rewrite(tmp_path: Path) -> None:
    # given both aliases served, and an offset the monitor fitted for champion version 3
    root = tmp_path / "repo"
    write_model_repository(root, served_models({"champion", "challenger"}))
    assert write_logit_offset(root, "telemarketing", LogitOffset(0.8, "3"))

    # when the repository is rewritten, the runtime options taken from the champion's folder
    write_model_repository(root, served_models({"champion", "challenger"}))

    # then the champion keeps its offset, and the challenger never got it
    assert served_offset(root, "telemarketing") == LogitOffset(0.8, "3")
    assert "logit_offset" not in _extra(root, "telemarketing-challenger"), "not the challenger's"
    assert existing_runtime_options(root) == RuntimeOptions(), "an offset is not a shared option"
    assert not write_logit_offset(root, "telemarketing-gone", LogitOffset(0.1, "1"))


def test_a_promotion_never_serves_the_old_champions_offset() -> None:
    # given version 3's offset was refitted by the monitor (a tag on version 3)
    refitted = _version("3", logit_offset="-0.25", logit_offset_recalibrated="0.8")

    # when champion moves to version 4, with or without an offset fitted at its registration
    tagged = champion_offset(_version("4", logit_offset="-0.25"))
    untagged = champion_offset(_version("4"))
    same = champion_offset(refitted)

    # then version 4 gets its own offset or none, and version 3 keeps the newer, refitted one
    assert tagged == LogitOffset(-0.25, "4"), tagged
    assert untagged is None, "the old champion's offset must not shift the new one"
    assert same == LogitOffset(0.8, "3"), "the monitor's refit is newer than the registration's"


def test_options_refuse_an_offset_without_its_version_and_apply_it_to_that_version_only() -> None:
    with pytest.raises(ValueError, match="logit_offset_version"):
        RuntimeOptions(logit_offset=0.5)

    options = RuntimeOptions(logit_offset=0.5, logit_offset_version="3")

    assert options.offset_for("3") == 0.5
    assert options.offset_for("4") == 0.0, "an offset fitted for version 3 is not version 4's"
    assert RuntimeOptions().offset_for("3") == 0.0


def test_a_repository_with_no_model_keeps_its_runtime_options_for_the_first_one(
    tmp_path: Path,
) -> None:
    # given MLServer's repository written before any champion, with the replay's options
    root = tmp_path / "repo"
    write_model_repository(root, [], ServerOptions(http_port=9101), RuntimeOptions(max_rows=7))
    assert not (root / "telemarketing").exists(), "no champion: no model folder"

    # when the reconciler writes the first champion's folder (no options given)
    write_model_repository(root, served_models({"champion"}))

    # then the champion gets the options the repository was written with
    assert _extra(root, "telemarketing")["max_rows"] == 7, _extra(root, "telemarketing")
    assert existing_runtime_options(root) == RuntimeOptions(max_rows=7)


def test_removing_the_champion_empties_the_repository(tmp_path: Path) -> None:
    # given a served champion / when its alias is gone / then its folder goes too
    root = tmp_path / "repo"
    write_model_repository(root, served_models({"champion"}))
    write_model_repository(root, [])
    assert not (root / "telemarketing").exists(), "a removed champion must not load again"
    assert (root / "settings.json").exists(), "the server settings stay"
