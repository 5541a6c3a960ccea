#!/usr/bin/env python3
"""Set up a development environment and run the server or the tests.

    python3 dev.py serve     # install everything into .venv, start the server on the offline sandbox
    python3 dev.py test      # install everything into .venv, run the whole test suite
    python3 dev.py test -k generate_image   # extra arguments go to pytest

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
    if command not in ("serve", "test", "setup"):
        print(__doc__, file=sys.stderr)
        return 2
    ensure_environment()
    if command == "setup":
        return 0
    if command == "serve":
        args = [str(venv_bin("fal-mcp")), "serve", "--sandbox", *rest]
    else:
        args = [str(venv_bin("python")), "-m", "pytest", *rest]
    os.chdir(ROOT)
    return subprocess.call(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
