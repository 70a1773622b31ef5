"""Production refuses placeholder secrets; development runs on embedded defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from telescore.settings import ApiSettings, MongoSettings, ProjectSettings, Settings

GOOD_SECRET = "k" * 16 + "3f9a1c7e5b2d8046"
MONGODB = MongoSettings(uri="mongodb://telescore:s3cr3t-pa55@mongo:27017")


def _production(secret: str | None) -> Settings:
    return Settings(
        project=ProjectSettings(environment="production"),
        mongodb=MONGODB,
        api=ApiSettings(secret_key=secret),
    )


@pytest.mark.parametrize("secret", [None, "", "changeme", "secret", "short-but-random-9f"])
def test_production_refuses_a_missing_placeholder_or_short_secret(secret: str | None) -> None:
    with pytest.raises(ValidationError, match="TELESCORE_API_SECRET_KEY"):
        _production(secret)


def test_production_starts_with_a_long_random_secret() -> None:
    settings = _production(GOOD_SECRET)
    assert settings.api.secret_key is not None, "the secret should be kept"


def test_production_refuses_a_placeholder_mongodb_password() -> None:
    with pytest.raises(ValidationError, match="placeholder password"):
        Settings(
            project=ProjectSettings(environment="production"),
            mongodb=MongoSettings(uri="mongodb://telescore:changeme@mongo:27017"),
            api=ApiSettings(secret_key=GOOD_SECRET),
        )


def test_development_needs_no_secret() -> None:
    assert Settings().api.secret_key is None, "development keeps a random key of its own"
