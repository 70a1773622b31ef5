"""The registry's alias reads: an alias that is gone is not a registry that does not answer."""

from __future__ import annotations

import pytest
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

from telescore.io.registry import Registry, RegistryError


class _Client:
    """An MLflow client that knows the champion (version 3) and fails every other alias read."""

    def __init__(self, error_code: int) -> None:
        self.error_code = error_code

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        if alias == "champion":
            tags = [ModelVersionTag("logit_offset", "0.5")]
            return ModelVersion(name, "3", creation_timestamp=0, run_id="run-3", tags=tags)
        raise MlflowException(f"alias {alias}", self.error_code)

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        raise MlflowException("registry down", self.error_code)


@pytest.fixture(autouse=True)
def _own_uris(mlflow_uris_restored: None) -> None:
    """The registries below point this process's MLflow at nowhere: only for their test."""


def _registry(monkeypatch: pytest.MonkeyPatch, error_code: int) -> Registry:
    # Nothing listens there: every call goes to the stand-in client.
    registry = Registry("http://127.0.0.1:9", "telemarketing", "tests")
    monkeypatch.setattr(registry, "client", _Client(error_code))
    return registry


@pytest.mark.parametrize("absent", [INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST])
def test_aliases_that_do_not_exist_are_left_out(
    monkeypatch: pytest.MonkeyPatch, absent: int
) -> None:
    # given a registry with a champion alias and no challenger alias (or no such model)
    registry = _registry(monkeypatch, absent)

    # when reading both aliases
    found = registry.alias_versions(["champion", "challenger"])

    # then only the champion is found, with its version, run and tags
    assert list(found) == ["champion"], found
    champion = found["champion"]
    assert (champion.version, champion.run_id, champion.alias) == ("3", "run-3", "champion")
    assert champion.tags == {"logit_offset": "0.5"}, "the tags must come with the version"


def test_a_registry_that_does_not_answer_is_an_error_not_a_gone_alias(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a registry that fails to answer for the challenger alias
    registry = _registry(monkeypatch, TEMPORARILY_UNAVAILABLE)

    # when reading the aliases, then the read fails (so a reconciler unloads nothing)
    with pytest.raises(RegistryError, match="challenger"):
        registry.alias_versions(["champion", "challenger"])
    # and a tag that cannot be written fails as a RegistryError, MLflow's error as its cause
    with pytest.raises(RegistryError) as caught:
        registry.tag_version("3", "logit_offset_recalibrated", "0.1")
    assert isinstance(caught.value.__cause__, MlflowException), caught.value.__cause__
