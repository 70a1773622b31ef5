"""The images: hadolint on every Dockerfile, and Python packages only from uv.lock."""

from __future__ import annotations

import re

import pytest
from deploy_checks import (
    DOCKERFILES,
    FIXTURES,
    HADOLINT,
    extras_named,
    final_user,
    instructions,
    is_root,
    lock_problems,
    locked_extras,
    makefile_uv_version,
)

BROKEN_DOCKERFILE = FIXTURES / "broken.Dockerfile"


def test_there_are_dockerfiles_to_check():
    assert DOCKERFILES, "no Dockerfile under docker/: the checks below would check nothing"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_passes_every_dockerfile(dockerfile):
    # given a Dockerfile of the repository / when hadolint reads it
    result = HADOLINT.run("--no-color", dockerfile)
    # then it has nothing to say
    assert result.passed, f"hadolint rejects {dockerfile.name}:\n{result.output}"


def test_hadolint_rejects_the_broken_dockerfile():
    # given a Dockerfile with an unpinned base and unpinned packages / when hadolint reads it
    result = HADOLINT.run("--no-color", BROKEN_DOCKERFILE)
    # then it fails, naming the rules broken
    assert not result.passed, f"hadolint accepted the broken fixture:\n{result.output}"
    for rule in ("DL3007", "DL3008", "DL3013"):
        assert rule in result.output, f"hadolint did not report {rule}:\n{result.output}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_python_packages_come_only_from_the_lock(dockerfile):
    # given an image's Dockerfile / when its install steps are read
    problems = lock_problems(dockerfile, makefile_uv_version())
    # then Python packages come from uv.lock (uv sync --frozen), uv itself at the Makefile's pin
    assert problems == [], f"{dockerfile.name} installs Python packages outside uv.lock: {problems}"


def test_the_lock_check_rejects_an_ad_hoc_install():
    # given a Dockerfile that pip-installs scikit-learn and never copies uv.lock
    # when the lock check reads it
    problems = lock_problems(BROKEN_DOCKERFILE, makefile_uv_version())
    # then it names both faults
    assert any("scikit-learn" in problem for problem in problems), f"missed the pip: {problems}"
    assert any("uv.lock" in problem for problem in problems), f"missed the lock: {problems}"


def test_the_lock_check_rejects_another_uv_version(tmp_path):
    # given the real Dockerfile with uv pinned to a version the Makefile does not use
    dockerfile = tmp_path / "Dockerfile"
    original = (DOCKERFILES[0].parent / "Dockerfile").read_text()
    dockerfile.write_text(re.sub(r"ARG UV_VERSION=\S+", "ARG UV_VERSION=0.1.0", original))
    # when the lock check reads it
    problems = lock_problems(dockerfile, makefile_uv_version())
    # then the mismatch is reported
    assert any("0.1.0" in problem for problem in problems), f"missed uv 0.1.0: {problems}"


def test_every_extra_the_images_install_is_in_the_lock():
    # given the extras the images install / when they are looked up in uv.lock
    missing = {
        f"{dockerfile.name}: {extra}"
        for dockerfile in DOCKERFILES
        for extra in extras_named(dockerfile) - locked_extras()
    }
    # then the lock resolves every one of them (`uv sync --frozen` fails on an unknown extra)
    assert not missing, f"extras the images install that uv.lock does not have: {missing}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_images_run_as_a_non_root_user_on_a_pinned_base(dockerfile):
    # given an image's Dockerfile
    bases = [args.split()[0] for keyword, args in instructions(dockerfile) if keyword == "FROM"]
    # then its final stage has a non-root USER
    assert not is_root(final_user(dockerfile)), f"{dockerfile.name} runs as root"
    # and every base is an exact tag (a build ARG resolves to one), never `latest`
    for base in bases:
        assert base.startswith("$") or re.search(r":[\w.-]*\d", base), (
            f"{dockerfile.name}: base {base} is not pinned to an exact tag"
        )
        assert not base.endswith(":latest"), f"{dockerfile.name}: base {base} is `latest`"


def test_the_python_base_is_an_exact_python_release():
    # given the telescore image's default base
    text = (DOCKERFILES[0].parent / "Dockerfile").read_text()
    match = re.search(r"ARG PYTHON_IMAGE=(\S+)", text)
    # then it names a patch release of Python 3.11 on Debian bookworm
    assert match, "docker/Dockerfile has no PYTHON_IMAGE build argument"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", match.group(1)), (
        f"the base {match.group(1)} is not an exact python:3.11.x-slim-bookworm tag"
    )
