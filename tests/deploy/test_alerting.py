"""The alert rules, Prometheus's and Alertmanager's configurations, checked by their own tools.

promtool checks the rules and runs their unit tests (prometheus/telescore.rules.test.yml: for
every alert, inputs that fire it and inputs that do not); promtool and amtool check compose's
configurations as the containers read them, and the embedded ones `telescore up` writes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from deploy_checks import (
    AMTOOL,
    COMPOSE_FILE,
    FIXTURES,
    PROMETHEUS_DIR,
    PROMTOOL,
    REPO,
    RULES_FILE,
    RULES_TESTS,
    load_compose,
)

from telescore.io.context import Context
from telescore.jobs.platform import monitoring_servers
from telescore.settings import ProjectSettings, Settings


def _alerts(rules_file: Path) -> list[dict]:
    rules = yaml.safe_load(rules_file.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def test_the_alert_rules_pass_promtool():
    # given the shipped rules / when promtool checks them / then they are valid PromQL and YAML
    result = PROMTOOL.run("check", "rules", RULES_FILE)
    assert result.passed, f"promtool check rules failed:\n{result.output}"
    assert f"{len(_alerts(RULES_FILE))} rules found" in result.output, result.output


def test_promtool_rejects_the_broken_rules():
    # given a rule whose expression does not parse / when checked / then promtool refuses it
    result = PROMTOOL.run("check", "rules", FIXTURES / "broken-rules.yml")
    assert not result.passed, f"promtool accepted the broken rules:\n{result.output}"
    assert "parse error" in result.output, f"the error does not say why:\n{result.output}"


def test_every_alert_passes_its_unit_tests():
    # given the rules' unit tests / when promtool runs them / then each case holds
    result = PROMTOOL.run("test", "rules", RULES_TESTS)
    assert result.passed, f"promtool test rules failed:\n{result.output}"


def test_every_alert_has_a_case_that_fires_and_one_that_does_not():
    # given every alert of the rules and every case of the unit tests
    cases = [
        case
        for test in yaml.safe_load(RULES_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    # then each alert is expected to fire in one case and to stay silent in another
    for alert in _alerts(RULES_FILE):
        name = alert["alert"]
        firing = [case for case in cases if case["alertname"] == name and case.get("exp_alerts")]
        silent = [
            case for case in cases if case["alertname"] == name and not case.get("exp_alerts")
        ]
        assert firing, f"no unit test makes {name} fire"
        assert silent, f"no unit test keeps {name} silent"
        # and each says how bad it is and what to look at, which Alertmanager routes on
        assert alert["labels"]["severity"] in {"critical", "warning"}, f"{name}'s severity"
        assert alert["labels"].get("component"), f"{name} has no component label"
        assert {"summary", "description"} <= set(alert["annotations"]), f"{name}'s annotations"


def test_the_unit_tests_catch_a_changed_threshold(tmp_path):
    # given the rules with the serving error ratio's threshold raised from 5% to 50%
    shutil.copy(RULES_TESTS, tmp_path / RULES_TESTS.name)
    text = RULES_FILE.read_text()
    assert ") > 0.05\n" in text, "the error ratio's threshold moved; update this test"
    (tmp_path / RULES_FILE.name).write_text(text.replace(") > 0.05\n", ") > 0.5\n"))
    # when the unit tests run on them / then they fail on that alert
    result = PROMTOOL.run("test", "rules", tmp_path / RULES_TESTS.name)
    assert not result.passed, "the unit tests passed with a threshold ten times higher"
    assert "ServingErrorRatioHigh" in result.output, result.output


def _as_mounted(tmp_path: Path) -> Path:
    """prometheus/ as compose's containers see it: secrets/ holds the login files."""
    folder = tmp_path / "etc"
    shutil.copytree(PROMETHEUS_DIR, folder)
    (folder / "secrets").mkdir()
    (folder / "secrets" / "password").write_text("a-password-for-the-check")
    return folder


def test_compose_prometheus_config_passes_promtool(tmp_path):
    # given prometheus/prometheus.yml beside the rules and the login, as mounted in compose
    folder = _as_mounted(tmp_path)
    # when promtool checks it / then it is valid, and it loads the shipped rules
    result = PROMTOOL.run("check", "config", folder / "prometheus.yml")
    assert result.passed, f"promtool check config failed:\n{result.output}"
    assert "telescore.rules.yml" in result.output, f"the rules are not loaded:\n{result.output}"


def test_compose_alertmanager_config_passes_amtool():
    result = AMTOOL.run("check-config", PROMETHEUS_DIR / "alertmanager.yml")
    assert result.passed, f"amtool check-config failed:\n{result.output}"
    assert "2 receivers" in result.output, f"the chat and e-mail receivers:\n{result.output}"


def test_compose_alertmanager_routes_critical_to_chat_and_everything_to_email():
    config = yaml.safe_load((PROMETHEUS_DIR / "alertmanager.yml").read_text())
    routes = {route["matchers"][0]: route for route in config["route"]["routes"]}
    critical = routes['severity="critical"']
    assert critical["receiver"] == "ops-chat" and critical["continue"], critical
    assert routes['severity=~"critical|warning"']["receiver"] == "ops-email", routes
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    # the secrets come from files (compose secrets), never from the configuration
    assert receivers["ops-chat"]["slack_configs"][0]["api_url_file"].startswith("/run/secrets/")
    assert config["global"]["smtp_auth_password_file"].startswith("/run/secrets/")


def test_the_embedded_configurations_pass_promtool_and_amtool(tmp_path):
    # given the configurations `telescore up` writes (built, not started)
    settings = Settings(project=ProjectSettings(state_dir=tmp_path))
    with Context(settings) as ctx:
        names = [server.name for server in monitoring_servers(ctx, REPO)]
    assert names == ["alert-receiver", "alertmanager", "prometheus"], names
    prometheus, alertmanager = tmp_path / "prometheus", tmp_path / "alertmanager"
    # when their tools check them / then they are valid, the rules loaded
    checked = PROMTOOL.run("check", "config", prometheus / "prometheus.yml")
    assert checked.passed, f"promtool check config failed:\n{checked.output}"
    assert f"{len(_alerts(RULES_FILE))} rules found" in checked.output, checked.output
    for web in (prometheus / "web.yml", alertmanager / "web.yml"):
        result = PROMTOOL.run("check", "web-config", web)
        assert result.passed, f"{web.name} of {web.parent.name}:\n{result.output}"
    result = AMTOOL.run("check-config", alertmanager / "alertmanager.yml")
    assert result.passed, f"amtool check-config failed:\n{result.output}"


def test_compose_runs_prometheus_on_the_shipped_files_and_reaches_mlserver():
    services = load_compose(COMPOSE_FILE)["services"]
    prometheus, alertmanager = services["prometheus"], services["alertmanager"]
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in prometheus["volumes"]}
    assert mounts["./prometheus/telescore.rules.yml"] == "/etc/prometheus/telescore.rules.yml"
    assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml", mounts
    assert "--web.config.file=/etc/prometheus/secrets/web.yml" in prometheus["command"]
    assert "--web.config.file=/etc/alertmanager/secrets/web.yml" in alertmanager["command"]
    # Prometheus joins `serving` to scrape MLServer; Alertmanager stays off the inner networks
    assert "serving" in prometheus["networks"], prometheus["networks"]
    assert alertmanager["networks"] == ["default"], alertmanager["networks"]
