"""The README's promises: its two commands are the ones CI runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text("utf-8")
    first_screen = readme.split("\n---\n")[0]
    return re.findall(r"```sh\n(.*?)\n```", first_screen, flags=re.S)


def test_readme_first_screen_has_exactly_two_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("aliak demo")
    assert commands[1].endswith("python -m pytest")
    assert ".ci/services run" in commands[1]  # the storage servers run with the suite


def test_ci_runs_both_readme_commands_verbatim() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text("utf-8").splitlines()
    for command in readme_commands():
        assert command in ci_lines


def test_the_test_vectors_are_the_spec_vectors_when_the_spec_is_beside_us() -> None:
    spec = ROOT.parent / "shared" / "spec" / "vectors" / "acs3.json"
    if spec.exists():  # a clone elsewhere stands alone with its own copy
        assert spec.read_bytes() == (ROOT / "tests" / "vectors_acs3.json").read_bytes()


def test_every_python_example_in_the_readme_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # examples create aliak.db here
    monkeypatch.delenv("ALIAK_MASTER_KEY", raising=False)
    readme = (ROOT / "README.md").read_text("utf-8")
    blocks = re.findall(r"```python\n(.*?)\n```", readme, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})  # our own docs, run as a user would


def test_ci_runs_the_server_backends_instead_of_skipping_them() -> None:
    # CI runs the suite under .ci/services; if the servers were missing there, the
    # PostgreSQL and Redis tests would skip and hide whatever is broken.
    if os.environ.get("CI"):
        assert os.environ.get("ALIAK_TEST_POSTGRES_DSN")
        assert os.environ.get("ALIAK_TEST_REDIS_URL")
