"""The ``aliak`` command, run as a user would run it."""

from __future__ import annotations

import subprocess
import sys


def run_aliak(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aliak", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_prints_each_labelled_stage_and_exits_zero() -> None:
    result = run_aliak("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "== Canonical request ==" in out
    assert (
        "== String to sign ==\nACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        in out
    )
    assert "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0" in out
    assert "YourAccessKeySecret" not in out


def test_no_command_prints_help_and_fails() -> None:
    result = run_aliak()
    assert result.returncode == 2
    assert "demo" in result.stderr


def test_unknown_command_fails() -> None:
    assert run_aliak("frobnicate").returncode == 2
