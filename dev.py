#!/usr/bin/env python3
"""Set up a development environment and run the server or the tests.

    python3 dev.py serve     # install everything into .venv, start the server on the offline sandbox
    python3 dev.py test      # install everything into .venv, run the test suite but the slow tests
                             # (on two workers, pytest-xdist)
    python3 dev.py test --all   # everything: then the slow tests (soak, pack installs); what CI runs
    python3 dev.py test -k generate_image   # extra arguments go to pytest
    python3 dev.py check     # ruff (lint and format) and mypy, as CI runs them

Needs only python3. The virtual environment is rebuilt when a pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PACKAGES = ["core", "sandbox", "plugins/image", "plugins/video", "plugins/audio", "plugins/utility"]
STAMP = VENV / ".installed"


def venv_bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def project_fingerprint() -> str:
    digest = hashlib.sha256()
    for pyproject in sorted(ROOT.glob("**/pyproject.toml")):
        # examples/ are not installed here (tests/test_example_pack.py installs and removes them).
        if ".venv" in pyproject.parts or pyproject.relative_to(ROOT).parts[0] == "examples":
            continue
        digest.update(str(pyproject.relative_to(ROOT)).encode())
        digest.update(pyproject.read_bytes())
    return digest.hexdigest()


def ensure_environment() -> None:
    fingerprint = project_fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    if not venv_bin("python").exists():
        print("creating .venv", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(venv_bin("python")), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    editable = [arg for package in PACKAGES for arg in ("-e", str(ROOT / package))]
    print("installing fal-mcp and its packs into .venv", file=sys.stderr)
    # The local packs are named explicitly so the root distribution's
    # dependencies resolve to them, never to an index.
    subprocess.run([*pip, *editable, "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(fingerprint)


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command not in ("serve", "test", "setup", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    ensure_environment()
    if command == "setup":
        return 0
    os.chdir(ROOT)
    if command == "serve":
        return subprocess.call([str(venv_bin("fal-mcp")), "serve", "--sandbox", *rest])
    if command == "check":
        checks = [
            [str(venv_bin("ruff")), "check", "."],
            [str(venv_bin("ruff")), "format", "--check", "."],
            [str(venv_bin("mypy"))],
        ]
        return max(subprocess.call(check) for check in checks)
    return run_tests(rest)


def run_tests(rest: list[str]) -> int:
    """pytest on two workers (pytest-xdist), the slow tests left out; with --all, then the slow tests
    (soak, pack installs) on their own, one at a time: they install into this environment and measure
    the machine. An explicit -m, -n or -p no:xdist is passed to pytest as given, in one run."""
    pytest = [str(venv_bin("python")), "-m", "pytest"]
    run_all = "--all" in rest
    rest = [arg for arg in rest if arg != "--all"]
    if any(arg == "-m" or (arg.startswith("-m") and not arg.startswith("--")) for arg in rest):
        return subprocess.call([*pytest, *rest])
    own_workers = any(
        arg in ("-n", "--numprocesses", "no:xdist") or arg.startswith(("-n", "--numprocesses="))
        for arg in rest
    )
    workers = [] if own_workers else ["-n", "2"]
    code = subprocess.call([*pytest, *workers, "-m", "not slow", *rest])
    if not run_all:
        return code
    slow = subprocess.call([*pytest, *([] if own_workers else ["-p", "no:xdist"]), "-m", "slow", *rest])
    # 5: nothing selected in one of the two runs (say, -k naming only fast tests) is no failure
    codes = [c for c in (code, slow) if c != 5] or [5]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
