"""What the embedded Prometheus and Alertmanager are given: rules, logins, their binaries."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from telescore.services.prometheus import (
    MonitoringNotInstalledError,
    WebLogin,
    bcrypt_hash,
    find_command,
    missing_commands,
    rules_source,
    write_rules,
    write_web_config,
)

REPO = Path(__file__).resolve().parents[3]


def _fors(path: Path) -> dict[str, str | None]:
    rules = yaml.safe_load(path.read_text())
    return {
        rule["alert"]: rule.get("for")
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_rule_for_shortens_every_alert_in_the_copy_only(tmp_path: Path) -> None:
    # given the shipped rules, some with minutes or hours of `for:`
    source = rules_source(REPO)
    shipped = source.read_text()
    assert "for: 3h" in shipped, "the rules changed: pick another `for` to look for"
    # when copied with rule_for
    copy = write_rules(source, tmp_path / "rules", rule_for="2s")
    # then every alert of the copy waits 2 s, and the shipped file is as it was
    fors = _fors(copy)
    assert fors and set(fors.values()) == {"2s"}, fors
    assert source.read_text() == shipped, "the shipped rules were changed"
    assert _fors(write_rules(source, tmp_path / "plain"))["LabelCoverageStuckAtZero"] == "3h"


def test_rule_for_must_be_a_prometheus_duration(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rule_for"):
        write_rules(rules_source(REPO), tmp_path, rule_for="2 seconds")


def test_the_web_config_holds_a_bcrypt_hash_of_the_password_only(tmp_path: Path) -> None:
    # given a login / when its web config is written
    path = write_web_config(tmp_path / "web.yml", WebLogin("telescore", "s3cret-pass-word"))
    # then it holds a bcrypt hash that checks the password, never the password, owner-only
    hashed = yaml.safe_load(path.read_text())["basic_auth_users"]["telescore"]
    assert hashed.startswith("$2b$10$"), hashed
    assert "s3cret-pass-word" not in path.read_text(), "the password is in the web config"
    assert path.stat().st_mode & 0o077 == 0, "others may read the web config"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    assert crypt.crypt("s3cret-pass-word", hashed) == hashed, "the hash does not check it"
    assert bcrypt_hash("s3cret-pass-word") != hashed, "each hash has its own salt"


def test_missing_binaries_say_how_to_install_them(monkeypatch, tmp_path: Path) -> None:
    # given a PATH without Prometheus or Alertmanager
    monkeypatch.setenv("PATH", str(tmp_path))
    # then starting one fails saying `make tools`, and `telescore up` is told why it skips them
    with pytest.raises(MonitoringNotInstalledError, match="make tools"):
        find_command(("prometheus",))
    missing = missing_commands()
    assert missing is not None and "prometheus" in missing and "make tools" in missing, missing
