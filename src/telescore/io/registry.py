"""MLflow: experiment tracking, the model registry, aliases and lineage tags."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException, RestException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

if TYPE_CHECKING:
    from pydantic import SecretStr

    from telescore.settings import MlflowSettings

SKOPS_TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
"""Types of our own gradient boosting models that skops, MLflow's format, must be told to load."""
CHAMPION = "champion"
PREVIOUS = "previous"
"""The champion before the last promotion: where a rollback goes."""
CHALLENGER = "challenger"
_ABSENT = {
    ErrorCode.Name(INVALID_PARAMETER_VALUE),  # no such alias
    ErrorCode.Name(RESOURCE_DOES_NOT_EXIST),  # no such registered model (or version)
}


class RegistryError(RuntimeError):
    """The registry could not answer (unreachable, failing, refused): MLflow's error, wrapped."""


@contextmanager
def _answering(what: str) -> Iterator[None]:
    """Raise MLflow's errors (a RestException is one) as RegistryError, saying what failed."""
    try:
        yield
    except MlflowException as error:
        raise RegistryError(f"{what}: {error}") from error


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version and where its model lives."""

    name: str
    version: str
    run_id: str | None = None
    alias: str | None = None
    """The alias it was resolved from, if any."""
    tags: Mapping[str, str] = field(default_factory=dict, compare=False)
    """The version's tags as read with it (empty when it was not read from the registry)."""

    @property
    def uri(self) -> str:
        """Return the registry URI of this exact version (it never moves, unlike an alias)."""
        return f"models:/{self.name}/{self.version}"


def resolve_model_uri(uri: str, tracking_uri: str | None = None) -> ModelVersionRef:
    """Pin `models:/<name>@<alias>` (or `models:/<name>/<version>`) to a registry version.

    `tracking_uri`: the registry to ask; None: the one the environment names
    (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI), as in MLServer's runtime.
    """
    if not uri.startswith("models:/"):
        raise ValueError(f"model URI {uri!r} is not a registry URI models:/<name>@<alias>")
    path = uri.removeprefix("models:/").strip("/")
    if "@" in path:
        name, alias = path.split("@", 1)
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        version = client.get_model_version_by_alias(name, alias)
        return ModelVersionRef(name, str(version.version), version.run_id, alias)
    name, _, version_text = path.rpartition("/")
    if not name or not version_text.isdigit():
        raise ValueError(f"model URI {uri!r} names neither an alias nor a version number")
    return ModelVersionRef(name, version_text)


def load_pyfunc(ref: ModelVersionRef) -> Any:
    """Load a registered version as MLflow's pyfunc model: what MLServer's runtime serves."""
    return mlflow.pyfunc.load_model(ref.uri)


def git_commit(root: Path = Path()) -> str:
    """Return the current git commit of the code, or "unknown" outside a checkout.

    An image has no `.git`: its build sets TELESCORE_GIT_COMMIT to the commit it was built from.
    """
    if commit := os.environ.get("TELESCORE_GIT_COMMIT"):
        return commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def model_requirements() -> list[str]:
    """Return the packages a served model needs, pinned to the versions installed here."""
    return [
        f"{name}=={metadata.version(name)}"
        for name in ("mlflow", "scikit-learn", "numpy", "pandas")
    ]


class Registry:
    """The MLflow tracking server and registry behind one client, created by the caller.

    The only module that talks to MLflow: jobs reach it through this class (a contract says so).
    """

    def __init__(
        self,
        tracking_uri: str,
        model_name: str,
        experiment: str,
        credentials: tuple[str, SecretStr] | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.experiment = experiment
        if credentials is not None:
            # MLflow reads them from the environment on every request, as it holds the URIs
            # process-wide; processes started later (MLServer) are given their own.
            username, password = credentials
            os.environ["MLFLOW_TRACKING_USERNAME"] = username
            os.environ["MLFLOW_TRACKING_PASSWORD"] = password.get_secret_value()
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @classmethod
    def from_settings(
        cls,
        mlflow_settings: MlflowSettings,
        host: str,
        credentials: tuple[str, SecretStr] | None = None,
    ) -> Registry:
        """Open the registry the settings name (the embedded MLflow on `host` by default)."""
        return cls(
            mlflow_settings.resolved_tracking_uri(host),
            mlflow_settings.model_name,
            mlflow_settings.experiment,
            credentials,
        )

    def start_run(
        self,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        *,
        parent_run_id: str | None = None,
        experiment: str | None = None,
    ) -> str:
        """Create a run and return its id; it stays open until `end_run`.

        In the registry's experiment, or in `experiment`; `parent_run_id` nests it under that
        run (MLflow's UI shows it as a child).
        """
        found = mlflow.set_experiment(experiment or self.experiment)
        run_tags = dict(tags or {})
        if parent_run_id is not None:
            run_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = self.client.create_run(found.experiment_id, run_name=run_name, tags=run_tags)
        return str(run.info.run_id)

    def answers(self, timeout: float = 3.0) -> bool:
        """Return whether the tracking server answers its health check within `timeout` s.

        A local store (a path, `file:`, `sqlite:`) always does. MLflow's own client retries a
        server that is down for minutes: a command that can run without it asks this first.
        """
        if not self.tracking_uri.startswith(("http://", "https://")):
            return True
        try:
            response = httpx.get(f"{self.tracking_uri.rstrip('/')}/health", timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == httpx.codes.OK

    def run_url(self, run_id: str) -> str:
        """Return where MLflow's UI shows a run (the tracking URI, for a local store)."""
        run = self.client.get_run(run_id)
        if not self.tracking_uri.startswith(("http://", "https://")):
            return f"{self.tracking_uri} run {run_id}"
        return (
            f"{self.tracking_uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
        )

    @contextmanager
    def active_run(self, run_id: str) -> Iterator[None]:
        """Make `run_id` the active run for mlflow.log_* calls, without ending it on exit."""
        mlflow.start_run(run_id=run_id)
        try:
            yield
        finally:
            # Leave the run RUNNING: later steps of the same flow log into it.
            mlflow.end_run(status="RUNNING")

    def end_run(self, run_id: str, succeeded: bool) -> None:
        """Close the run as FINISHED or FAILED."""
        self.client.set_terminated(run_id, status="FINISHED" if succeeded else "FAILED")

    def log(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        artifacts: Iterable[tuple[str, Path]] = (),
    ) -> None:
        """Log params, finite metrics, tags and (artifact folder, local file) pairs to a run."""
        for key, value in (params or {}).items():
            self.client.log_param(run_id, key, value)
        for key, value in (metrics or {}).items():
            if np.isfinite(value):
                self.client.log_metric(run_id, key, float(value))
        for key, text in (tags or {}).items():
            self.client.set_tag(run_id, key, text)
        for folder, path in artifacts:
            self.client.log_artifact(run_id, str(path), artifact_path=folder)

    def log_model(
        self, run_id: str, model: Any, example: pd.DataFrame, metadata: Mapping[str, Any]
    ) -> str:
        """Log a scikit-learn model served as probabilities; return its model URI."""
        signature = infer_signature(example, model.predict_proba(example))
        with self.active_run(run_id):
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=signature,
                input_example=example.head(3),
                pyfunc_predict_fn="predict_proba",
                metadata=dict(metadata),
                # Pinned from this environment: inferring them exports the whole lock (~5 s).
                pip_requirements=model_requirements(),
                # skops refuses types that could index out of bounds if tampered with; these
                # are the boosting trees this job fitted itself.
                skops_trusted_types=SKOPS_TRUSTED_TYPES,
            )
        return str(info.model_uri)

    def register(self, model_uri: str, run_id: str, tags: Mapping[str, str]) -> ModelVersionRef:
        """Register `model_uri` under the model name with lineage tags on the version."""
        version = mlflow.register_model(model_uri, self.model_name, tags=dict(tags))
        return ModelVersionRef(self.model_name, str(version.version), run_id)

    def alias_version(self, alias: str) -> ModelVersionRef | None:
        """Return the version an alias points to, or None when the alias (or model) is absent.

        None too when the registry does not answer; `alias_versions` tells the two apart.
        """
        try:
            version = self.client.get_model_version_by_alias(self.model_name, alias)
        except (MlflowException, RestException):
            return None
        return self._ref(version, alias)

    def alias_versions(self, aliases: Iterable[str]) -> dict[str, ModelVersionRef]:
        """Return the version (with its tags) of each of `aliases` that exists.

        Raises RegistryError when the registry cannot say (unreachable, failing): an alias
        that could not be read is not an alias that is gone.
        """
        found = {}
        for alias in aliases:
            try:
                version = self.client.get_model_version_by_alias(self.model_name, alias)
            except MlflowException as error:
                if error.error_code in _ABSENT:
                    continue
                raise RegistryError(f"reading alias {alias!r}: {error}") from error
            found[alias] = self._ref(version, alias)
        return found

    def version(self, version: str) -> ModelVersionRef:
        """Return a registered version with its run and tags; RegistryError if unknown."""
        with _answering(f"reading version {version} of {self.model_name}"):
            details = self.client.get_model_version(self.model_name, version)
        return self._ref(details)

    def has_versions(self) -> bool:
        """Tell whether any version of the model is registered; RegistryError if unanswered."""
        with _answering(f"listing the versions of {self.model_name}"):
            found = self.client.search_model_versions(f"name = '{self.model_name}'", max_results=1)
        return len(found) > 0

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """Return the latest value of each metric a run logged."""
        with _answering(f"reading the metrics of run {run_id}"):
            return dict(self.client.get_run(run_id).data.metrics)

    def _ref(self, version: Any, alias: str | None = None) -> ModelVersionRef:
        tags = dict(version.tags or {})
        return ModelVersionRef(self.model_name, str(version.version), version.run_id, alias, tags)

    def set_alias(self, alias: str, version: str) -> None:
        """Point `alias` at `version`."""
        with _answering(f"pointing {alias!r} at version {version}"):
            self.client.set_registered_model_alias(self.model_name, alias, version)

    def delete_alias(self, alias: str) -> None:
        """Remove `alias` (nothing happens if it is not set)."""
        if self.alias_version(alias) is not None:
            with _answering(f"removing alias {alias!r}"):
                self.client.delete_registered_model_alias(self.model_name, alias)

    def tag_version(self, version: str, key: str, value: str) -> None:
        """Set a tag on a model version."""
        with _answering(f"tagging version {version} with {key}"):
            self.client.set_model_version_tag(self.model_name, version, key, value)

    def load_model(self, ref: ModelVersionRef) -> Any:
        """Load a registered version as the scikit-learn model it was logged as."""
        return mlflow.sklearn.load_model(ref.uri)

    def download(self, artifact_uri: str, destination: Path) -> Path:
        """Download a run's artifact (`runs:/<run id>/<path>`) into a folder; return its path."""
        destination.mkdir(parents=True, exist_ok=True)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, dst_path=str(destination), tracking_uri=self.tracking_uri
        )
        return Path(local)

    def version_tags(self, ref: ModelVersionRef) -> dict[str, str]:
        """Return the tags of a model version, as the registry has them now."""
        with _answering(f"reading the tags of version {ref.version} of {ref.name}"):
            return dict(self.client.get_model_version(ref.name, ref.version).tags)
