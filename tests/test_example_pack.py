"""examples/fal-mcp-speech as its users get it: pip-installed into this environment, found by fal-mcp,
passing its own test suite, then uninstalled without a trace. Offline: no dependencies are fetched and
the build uses the setuptools already installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fal_mcp_sandbox.testing import clean_env, run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fal-mcp-speech"
DIST = "fal-mcp-speech"


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def installed() -> bool:
    return pip("show", "--quiet", DIST).returncode == 0


def rows(command: str) -> dict[str, dict]:
    done = run_cli(command, "--json")
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)}


@pytest.mark.slow
def test_example_pack_installs_passes_its_tests_and_uninstalls(tmp_path):
    if installed():
        pytest.skip(f"{DIST} is already installed here; `pip uninstall -y {DIST}` to run this test")
    # Built from a copy, so no build/ or egg-info is left in the checkout and none of it goes stale.
    leftovers = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache")
    source = shutil.copytree(EXAMPLE, tmp_path / "fal-mcp-speech", ignore=leftovers)
    try:
        done = pip("install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", str(source))
        assert done.returncode == 0, done.stdout + done.stderr
        pack = rows("plugins")["speech"]
        assert pack["status"] == "active", pack["error"]
        tools = rows("tools")
        assert tools["text_to_speech"]["distribution"] == tools["transcribe_audio"]["distribution"] == DIST
        command = [sys.executable, "-m", "pytest", str(EXAMPLE / "tests"), "-q", "-p", "no:cacheprovider"]
        suite = subprocess.run(
            command, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=300
        )
        assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-2000:]
        assert " passed" in suite.stdout and "skipped" not in suite.stdout, suite.stdout[-2000:]
    finally:
        # Whatever happened above: the rest of the suite must never see the pack.
        removed = pip("uninstall", "--yes", DIST)
    assert removed.returncode == 0, removed.stderr
    assert not installed()
    assert "speech" not in rows("plugins")
    assert "text_to_speech" not in rows("tools")
