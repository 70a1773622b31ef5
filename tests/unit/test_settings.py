"""Production refuses placeholder secrets; development runs on embedded defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from telescore.app.metrics import metrics_token
from telescore.app.security import session_secret
from telescore.settings import (
    MLFLOW_PASSWORD_VARIABLES,
    AlertmanagerSettings,
    ApiSettings,
    MlflowSettings,
    MongoSettings,
    PrefectSettings,
    ProductionSecret,
    ProjectSettings,
    PrometheusSettings,
    Settings,
    refuse_weak_secrets,
)

GOOD_SECRET = "k" * 16 + "3f9a1c7e5b2d8046"
MONGODB = MongoSettings(uri="mongodb://telescore-app:9f3a1c7e5b2d8046aa71@mongo:27017")
PREFECT = PrefectSettings(auth_string=f"telescore:{GOOD_SECRET}")
MLFLOW = MlflowSettings(
    tracking_uri="http://mlflow:5000", username="telescore-writer", password=GOOD_SECRET
)


@pytest.fixture(autouse=True)
def no_mlflow_login_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read only what each test gives: a `Registry` opened earlier in the same pytest process
    exports its MLflow login to the environment, where these settings would find it."""
    for prefix in ("TELESCORE_MLFLOW_", "MLFLOW_TRACKING_"):
        for name in ("USERNAME", "PASSWORD"):
            monkeypatch.delenv(prefix + name, raising=False)


def _production(secret: str | None, mlflow: MlflowSettings = MLFLOW) -> Settings:
    return Settings(
        project=ProjectSettings(environment="production"),
        mongodb=MONGODB,
        prefect=PREFECT,
        api=ApiSettings(secret_key=secret),
        mlflow=mlflow,
    )


@pytest.mark.parametrize("secret", ["", "changeme", "secret", "short-but-random-9f"])
def test_production_refuses_a_placeholder_or_short_secret(secret: str) -> None:
    # given production settings with a placeholder session key or a short one
    # when they are validated / then they are refused, naming the variable to set
    with pytest.raises(ValidationError, match="TELESCORE_API_SECRET_KEY"):
        _production(secret)


def test_production_without_a_session_key_is_refused_by_the_app_alone(tmp_path: Path) -> None:
    # given production settings without a session key, as MLServer and the flow runs get them
    settings = _production(None).model_copy(
        update={"project": ProjectSettings(environment="production", state_dir=tmp_path)}
    )
    # when the web app asks for the key to sign sessions with / then it is refused by name
    with pytest.raises(ValueError, match="TELESCORE_API_SECRET_KEY must be set in production"):
        session_secret(settings)
    # and no key of its own was made up in its place
    assert not list(tmp_path.iterdir()), "the app wrote a key of its own in production"


def test_production_starts_with_a_long_random_secret() -> None:
    # given production settings with a long random secret and a real MongoDB password
    # when they are validated
    settings = _production(GOOD_SECRET)

    # then they are accepted, the secret as given
    assert settings.api.secret_key is not None, "the secret should be kept"
    assert settings.api.secret_key.get_secret_value() == GOOD_SECRET, "the secret was altered"


def test_production_refuses_a_placeholder_mongodb_password() -> None:
    # given production settings with a good secret but MongoDB's password a placeholder
    placeholder = MongoSettings(uri="mongodb://telescore:changeme@mongo:27017")

    # when they are validated / then they are refused
    with pytest.raises(ValidationError, match="placeholder password"):
        Settings(
            project=ProjectSettings(environment="production"),
            mongodb=placeholder,
            api=ApiSettings(secret_key=GOOD_SECRET),
            mlflow=MLFLOW,
        )


@pytest.mark.parametrize(
    ("uri", "refusal"),
    [
        ("mongodb://telescore-app:short9f3a@mongo:27017", "a short password"),
        ("mongodb://telescore-app:<password>@mongo:27017", "a placeholder password"),
        ("mongodb://telescore-app:CHANGEME-please-0123@mongo:27017", "a placeholder password"),
        ("mongodb://telescore-app:@mongo:27017", "no password"),
        ("mongodb://mongo:27017/telescore", "no password"),
    ],
)
def test_production_refuses_a_weak_or_missing_mongodb_password(uri: str, refusal: str) -> None:
    # given production settings with a good session key and a MongoDB URI whose password is
    # short, a blank to fill in, says changeme, is empty or absent
    # when they are validated / then they are refused, naming the variable and why
    with pytest.raises(ValidationError, match=f"TELESCORE_MONGODB_URI holds {refusal}"):
        Settings(
            project=ProjectSettings(environment="production"),
            mongodb=MongoSettings(uri=uri),
            api=ApiSettings(secret_key=GOOD_SECRET),
        )


def test_every_weak_secret_is_named_at_once() -> None:
    # given two weak secrets of a list, one good
    secrets = [
        ProductionSecret("A_KEY", None),
        ProductionSecret("GOOD_KEY", SecretStr(GOOD_SECRET)),
        ProductionSecret("B_URI", SecretStr("postgresql://u:changeme@db/x"), in_uri=True),
    ]
    # when they are checked / then one refusal names both weak ones, not the good one
    with pytest.raises(ValueError, match="A_KEY holds no value.*B_URI holds a placeholder") as e:
        refuse_weak_secrets(secrets)
    assert "GOOD_KEY" not in str(e.value), f"a good secret was refused: {e.value}"


@pytest.mark.parametrize(
    ("username", "password", "refusal"),
    [
        ("telescore-writer", None, "holds no value"),
        ("telescore-writer", "changeme", "holds a placeholder value"),
        ("telescore-writer", "password", "holds a placeholder value"),
        ("telescore-writer", "short-9f3a1c", "holds a short value"),
        (None, GOOD_SECRET, "is set, TELESCORE_MLFLOW_USERNAME"),
    ],
)
def test_production_refuses_a_weak_or_half_set_mlflow_login(
    username: str | None, password: str | None, refusal: str
) -> None:
    # given production settings whose MLflow password is missing, a placeholder or short, or
    # set without a user
    mlflow = MlflowSettings(tracking_uri="http://mlflow:5000", username=username, password=password)

    # when they are validated / then they are refused, naming the variables and why
    named = re.escape(f"{MLFLOW_PASSWORD_VARIABLES} {refusal}")
    with pytest.raises(ValidationError, match=named):
        _production(GOOD_SECRET, mlflow)


def test_production_without_an_mlflow_login_loads_but_cannot_talk_to_mlflow(
    tmp_path: Path,
) -> None:
    # given production settings without MLflow credentials: a process compose or k8s gives
    # none because it never talks to MLflow (the Evidently UI)
    settings = _production(GOOD_SECRET, MlflowSettings(tracking_uri="http://mlflow:5000"))

    # when something asks for the credentials to sign in to MLflow with
    # then it is refused, naming the variables to set
    with pytest.raises(ValueError, match="TELESCORE_MLFLOW_USERNAME .*MLFLOW_TRACKING_PASSWORD"):
        settings.mlflow.checked_credentials(settings.project.environment, tmp_path)
    # and with them set it gets them
    credentials = MLFLOW.checked_credentials("production", tmp_path)
    assert credentials is not None, "production credentials were dropped"
    assert credentials[0] == "telescore-writer", f"signed in as {credentials[0]}"


def test_embedded_mlflow_signs_in_as_the_writer_kept_under_the_state_folder(
    tmp_path: Path,
) -> None:
    # given the embedded MLflow (no URI, no user set) and the writer's password kept by `up`
    from telescore.settings import MLFLOW_WRITER, mlflow_password_file

    path = mlflow_password_file(tmp_path, MLFLOW_WRITER)
    path.parent.mkdir(parents=True)
    path.write_text("kept-password\n")
    mlflow = MlflowSettings(tracking_uri=None, username=None, password=None)

    # when the credentials are resolved
    credentials = mlflow.credentials(tmp_path)

    # then they are the writer's, with the kept password
    assert credentials is not None, "the embedded writer's credentials were not found"
    assert credentials[0] == MLFLOW_WRITER, f"signed in as {credentials[0]}, not the writer"
    assert credentials[1].get_secret_value() == "kept-password", "the kept password was altered"


def test_development_needs_no_secret() -> None:
    # given development settings with no secret (set here, not read from the environment)
    project, api = ProjectSettings(environment="development"), ApiSettings(secret_key=None)

    # when they are validated
    settings = Settings(project=project, api=api)

    # then they are accepted without one (the app then keeps a random key of its own)
    assert settings.api.secret_key is None, "development should run with no secret set"


@pytest.mark.parametrize(
    "auth_string",
    ["", "telescore", "telescore:changeme", f":{GOOD_SECRET}", "telescore:short-9f3a"],
)
def test_production_refuses_a_placeholder_or_short_prefect_auth_string(
    auth_string: str | None,
) -> None:
    # given production settings, good but for the Prefect API's credentials
    # when they are validated / then they are refused, naming the variable to set
    with pytest.raises(ValidationError, match="TELESCORE_PREFECT_AUTH_STRING"):
        Settings(
            project=ProjectSettings(environment="production"),
            mongodb=MONGODB,
            prefect=PrefectSettings(auth_string=auth_string),
            api=ApiSettings(secret_key=GOOD_SECRET),
        )


def test_production_refuses_to_talk_to_prefect_without_an_auth_string() -> None:
    # given production settings without Prefect credentials (the app and MLServer need none)
    settings = Settings(
        project=ProjectSettings(environment="production"),
        mongodb=MONGODB,
        prefect=PrefectSettings(auth_string=None),
        api=ApiSettings(secret_key=GOOD_SECRET),
    )
    # when something asks for the credentials to send Prefect, then it is refused by name
    with pytest.raises(ValueError, match="TELESCORE_PREFECT_AUTH_STRING"):
        settings.prefect.checked_auth_string(settings.project.environment)
    # and with them it gets them
    assert PREFECT.checked_auth_string("production") == f"telescore:{GOOD_SECRET}", "not sent"


@pytest.mark.parametrize(
    ("field", "variable"),
    [
        ("prometheus", "TELESCORE_PROMETHEUS_AUTH_STRING"),
        ("alertmanager", "TELESCORE_ALERTMANAGER_AUTH_STRING"),
    ],
)
def test_production_refuses_a_short_prometheus_or_alertmanager_login(
    field: str, variable: str
) -> None:
    # given production settings, good but for Prometheus's or Alertmanager's login
    weak = {"prometheus": PrometheusSettings, "alertmanager": AlertmanagerSettings}[field](
        auth_string="telescore:short-9f3a"
    )
    # when they are validated / then they are refused, naming the variable to set
    with pytest.raises(ValidationError, match=variable):
        Settings(
            project=ProjectSettings(environment="production"),
            mongodb=MONGODB,
            api=ApiSettings(secret_key=GOOD_SECRET),
            **{field: weak},
        )


def test_monitoring_durations_are_prometheus_durations() -> None:
    # given a duration Prometheus reads, and one it does not
    assert PrometheusSettings(scrape_interval="1m30s").scrape_interval == "1m30s", "refused 1m30s"
    # when the second is validated / then it is refused, naming the field
    with pytest.raises(ValidationError, match="group_wait"):
        AlertmanagerSettings(group_wait="30 seconds")


@pytest.mark.parametrize("token", ["", "changeme", "xxxxxxxx", "short-but-random-9f"])
def test_production_refuses_a_placeholder_or_short_metrics_token(token: str) -> None:
    # given production settings whose metrics token is a placeholder or short
    # when they are validated / then they are refused, naming the variable to set
    with pytest.raises(ValidationError, match="TELESCORE_API_METRICS_TOKEN"):
        Settings(
            project=ProjectSettings(environment="production"),
            mongodb=MONGODB,
            prefect=PREFECT,
            api=ApiSettings(secret_key=GOOD_SECRET, metrics_token=token),
        )


def test_production_without_a_metrics_token_is_refused_by_the_app(tmp_path: Path) -> None:
    # given production settings without a metrics token
    settings = Settings(
        project=ProjectSettings(environment="production", state_dir=tmp_path),
        mongodb=MONGODB,
        prefect=PREFECT,
        api=ApiSettings(secret_key=GOOD_SECRET),
    )
    # when the web app asks for the token /metrics takes / then it is refused by name
    with pytest.raises(ValueError, match="TELESCORE_API_METRICS_TOKEN must be set in production"):
        metrics_token(settings)
    # and no token of its own was made up in its place
    assert not list(tmp_path.iterdir()), "the app wrote a metrics token of its own in production"
