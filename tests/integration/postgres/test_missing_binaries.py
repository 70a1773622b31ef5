"""A machine without PostgreSQL fails the lane, saying what installs it; it never skips it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integration.postgres.conftest import require_postgres_binaries

pytestmark = pytest.mark.integration


def test_missing_postgresql_binaries_fail_the_lane_naming_make_tools(tmp_path: Path) -> None:
    # given no PostgreSQL under Debian's folder nor on PATH (only a lone initdb)
    (tmp_path / "15" / "bin").mkdir(parents=True)
    (tmp_path / "15" / "bin" / "initdb").touch(mode=0o755)
    # when the lane looks for its binaries / then the test fails (never skips), naming make tools
    with pytest.raises(pytest.fail.Exception, match=r"postgres.*not found.*run `make tools`"):
        require_postgres_binaries(tmp_path, search_path=str(tmp_path / "empty"))


def test_the_binaries_of_this_machine_are_found() -> None:
    # given `make tools` was run / when the lane looks for its binaries / then it finds them all
    found = require_postgres_binaries()
    assert (found / "initdb").is_file() and (found / "postgres").is_file(), found
