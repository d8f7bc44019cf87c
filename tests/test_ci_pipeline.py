"""The CI pipeline in the repository (.github/workflows/boards.yml), checked as far as this
machine allows: GitHub's workflow schema (SchemaStore's, as check-jsonschema vendors it), a
matrix job for every target `./build.py --list` shows, and test selections that together
are exactly qemu-tests/, none empty. What cannot run here is a GitHub runner itself."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from apbuild.config import find_root, list_boards
from apbuild.machines import pairings

ROOT = find_root()
WORKFLOW = ROOT / ".github" / "workflows" / "boards.yml"


def _workflow() -> dict:
    try:
        from ruamel.yaml import YAML
    except ImportError:
        pytest.fail("the CI pipeline's checks need check-jsonschema from PyPI (requirements-test.txt)")
    return YAML(typ="safe").load(WORKFLOW.read_text())


def _matrix() -> list[dict]:
    return _workflow()["jobs"]["board"]["strategy"]["matrix"]["include"]


def test_the_workflow_is_valid_for_github_actions():
    try:
        import check_jsonschema  # noqa: F401
    except ImportError:
        pytest.fail("the CI pipeline's checks need check-jsonschema from PyPI (requirements-test.txt)")
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(WORKFLOW)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_target_is_a_matrix_job():
    targets = list_boards(ROOT) + [name for name, _ in pairings(ROOT)]
    assert sorted(job["target"] for job in _matrix()) == sorted(targets)


def _collected(args: list[str]) -> set[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line for line in proc.stdout.splitlines() if "::" in line}


def test_the_jobs_boot_tests_are_every_qemu_test_once_at_least():
    every = _collected(["qemu-tests"])
    chosen: set[str] = set()
    for job in _matrix():
        got = _collected(shlex.split(job["tests"]))
        assert got, f"{job['target']}: '{job['tests']}' selects no test"
        chosen |= got
    assert chosen == every, sorted(every - chosen)
