"""As root, postgres runs as `postgres`: a cluster folder it cannot reach is refused up front."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from telescore.services.postgres import postgres_server
from telescore.services.processes import ServiceStartError, free_port

pytestmark = pytest.mark.integration


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to `postgres`")
def test_a_state_folder_postgres_cannot_reach_is_refused_saying_why(tmp_path: Path) -> None:
    # given a state folder inside a folder only root may enter (pytest's own is one: 0700)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    # when the cluster is set up there / then it is refused, naming the folder in the way
    with pytest.raises(ServiceStartError, match=rf"cannot reach .*{private} is not searchable"):
        postgres_server(private / "state", free_port(), password="unused")
