#!/usr/bin/env python3
"""Set up a development environment and run the server or the tests.

    python3 dev.py setup     # install everything into .venv; then fal-mcp is .venv/bin/fal-mcp
    python3 dev.py serve     # install everything into .venv, start the server on the offline sandbox
    python3 dev.py test      # install everything into .venv, run the test suite but the slow tests
                             # (on two workers, pytest-xdist)
    python3 dev.py test --all   # everything: then the slow tests (soak, pack installs); what CI runs
    python3 dev.py test -k generate_image   # extra arguments go to pytest
    python3 dev.py check     # ruff (lint and format) and mypy, as CI runs them

Needs only python3. The virtual environment is rebuilt when a pyproject.toml changes; each step is
reported on stderr, pip's own output kept in .venv/setup.log (shown when a step fails).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PACKAGES = ["core", "sandbox", "plugins/image", "plugins/video", "plugins/audio", "plugins/utility"]
STAMP = VENV / ".installed"
LOG = VENV / "setup.log"


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


def say(message: str) -> None:
    print(f"dev.py: {message}", file=sys.stderr, flush=True)


def took(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def shown(path: Path) -> str:
    """`path` as a command line in the current directory would name it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Step:
    """One step of the setup, on stderr: `dev.py: [2/8] installing fal-mcp-core (core) ...`, then the same
    line with how long it took. On a terminal the line is rewritten in place with pip's current action
    (collecting, downloading, building...); elsewhere (CI logs) a line when the step starts and one when
    it ends."""

    def __init__(self, number: int, total: int, text: str, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.prefix = f"dev.py: [{number}/{total}] "
        self.text = text
        self.started = time.monotonic()
        self._write(f"{text} ...", end=not self.live)

    def status(self, detail: str) -> None:
        if self.live and detail:
            self._write(f"{self.text} ... {detail}", end=False)

    def done(self, summary: str = "") -> None:
        elapsed = took(time.monotonic() - self.started)
        self._write(f"{self.text}: done in {elapsed}" + (f", {summary}" if summary else ""), end=True)

    def failed(self) -> None:
        self._write(f"{self.text}: FAILED after {took(time.monotonic() - self.started)}", end=True)

    def _write(self, line: str, end: bool) -> None:
        line = self.prefix + line
        if self.live:
            width = shutil.get_terminal_size().columns - 1
            line = "\r\033[K" + (line if end or len(line) <= width else line[: width - 3] + "...")
        self.stream.write(line + ("\n" if end else ""))
        self.stream.flush()


# What pip is doing, from its output lines, for a step's live status.
PIP_ACTIONS = ("Collecting", "Downloading", "Processing", "Obtaining", "Building", "Installing", "Preparing")


def pip_install(step: Step, python: Path, args: list[str]) -> None:
    """`pip install <args>`: its output goes to .venv/setup.log (its last lines to stderr if it fails)."""
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    lines: list[str] = []
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join([*command, *args])}\n")
        log.flush()
        process = subprocess.Popen(
            [*command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            lines.append(line)
            if line.lstrip().startswith(PIP_ACTIONS):
                step.status(" ".join(line.split()[:3]))
        code = process.wait()
    if code != 0:
        step.failed()
        sys.stderr.write("".join(line for line in lines[-40:] if not line.startswith("WARNING: Location")))
        say(f"pip failed (exit status {code}); its whole output is in {shown(LOG)}.")
        say("Fix the cause, then run the same command again: the setup is retried.")
        raise SystemExit(code)
    installed = next((line.split()[2:] for line in lines if line.startswith("Successfully installed")), [])
    count = len(installed)
    step.done(f"{count} package{'s' if count != 1 else ''} installed" if count else "nothing new")


def installable(package: str) -> tuple[str, str]:
    """(distribution name, path) of one of PACKAGES, read from its pyproject.toml."""
    name = package
    for line in (ROOT / package / "pyproject.toml").read_text().splitlines():
        if line.startswith("name = "):
            name = line.split("=", 1)[1].strip().strip('"')
            break
    return name, package


def ensure_environment() -> bool:
    """Set .venv up unless it matches every pyproject.toml already. True when it installed."""
    fingerprint = project_fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return False
    began = time.monotonic()
    packages = [installable(package) for package in PACKAGES]
    fresh = not pip_works()
    total = len(packages) + 1 + fresh
    if fresh:
        say(f"setting up {shown(VENV)} for the first time: {total} steps, a minute or a few")
    else:
        say(f"a pyproject.toml changed: reinstalling into {shown(VENV)}, {total} steps")
    number = 0
    if fresh:
        number += 1
        again = " again (the one there has no pip)" if VENV.exists() else ""
        python = sys.version.split()[0]
        step = Step(
            number, total, f"creating the virtual environment {shown(VENV)}{again} with Python {python}"
        )
        try:
            venv.EnvBuilder(with_pip=True, clear=VENV.exists()).create(VENV)
        except (OSError, subprocess.CalledProcessError) as error:
            step.failed()
            say(f"could not create {shown(VENV)}: {error}")
            say("Without ensurepip (Debian, Ubuntu) install the venv module: sudo apt install python3-venv;")
            say("then run the same command again.")
            raise SystemExit(1) from None
        step.done()
    LOG.write_text("")
    # One package at a time, in dependency order: the core first, the root distribution last, so each
    # depends only on local packages installed before it, never on an index's copy of them.
    for name, package in packages:
        number += 1
        step = Step(number, total, f"installing {name} ({package}/)")
        pip_install(step, venv_bin("python"), ["-e", str(ROOT / package)])
    number += 1
    step = Step(number, total, "installing fal-mcp (./) with the test tools")
    pip_install(step, venv_bin("python"), ["-e", f"{ROOT}[test]"])
    STAMP.write_text(fingerprint)
    say(f"{shown(VENV)} is ready ({took(time.monotonic() - began)})")
    return True


def pip_works() -> bool:
    """Whether .venv has a Python with pip (an interrupted creation leaves one without)."""
    python = venv_bin("python")
    if not python.exists():
        return False
    check = subprocess.run([str(python), "-c", "import pip"], capture_output=True)
    return check.returncode == 0


def next_steps() -> None:
    fal_mcp = shown(venv_bin("fal-mcp"))
    say(f"fal-mcp is {fal_mcp} (no need to activate {shown(VENV)}). Next:")
    commands = [
        (f"{fal_mcp} serve --sandbox", "the server on the offline fal sandbox: no key needed"),
        (f"{fal_mcp} plugins", "the packs that loaded"),
        (f"python3 {shown(ROOT / 'dev.py')} test", "the test suite"),
    ]
    width = max(len(command) for command, _ in commands)
    for command, what in commands:
        print(f"    {command:<{width}}  # {what}", file=sys.stderr)


def run(command: list[str]) -> int:
    """A child in the foreground. Ctrl-C reaches it too (the terminal signals the whole process group):
    it stops in its own way, dev.py waits for it (no traceback of its own), then stops too (exit 130)
    instead of going on to a next command."""
    interrupted: list[int] = []
    # a handler, not SIG_IGN, which the child would inherit
    previous = signal.signal(signal.SIGINT, lambda number, _: interrupted.append(number))
    try:
        code = subprocess.call(command)
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise SystemExit(130)
    return 128 - code if code < 0 else code  # killed by a signal: 128 + its number, as a shell says


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command not in ("serve", "test", "setup", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        installed = ensure_environment()
    except KeyboardInterrupt:
        print(file=sys.stderr)
        say("setup interrupted; run the same command again to finish it")
        return 130
    if command == "setup":
        if not installed:
            say(f"{shown(VENV)} is up to date (it matches every pyproject.toml): nothing to install")
        next_steps()
        return 0
    fal_mcp = str(venv_bin("fal-mcp"))
    os.chdir(ROOT)
    if command == "serve":
        return run([fal_mcp, "serve", "--sandbox", *rest])
    if command == "check":
        checks = [
            [str(venv_bin("ruff")), "check", "."],
            [str(venv_bin("ruff")), "format", "--check", "."],
            [str(venv_bin("mypy"))],
        ]
        return max(run(check) for check in checks)
    return run_tests(rest)


def run_tests(rest: list[str]) -> int:
    """pytest on two workers (pytest-xdist), the slow tests left out; with --all, then the slow tests
    (soak, pack installs) on their own, one at a time: they install into this environment and measure
    the machine. An explicit -m, -n or -p no:xdist is passed to pytest as given, in one run."""
    pytest = [str(venv_bin("python")), "-m", "pytest"]
    run_all = "--all" in rest
    rest = [arg for arg in rest if arg != "--all"]
    if any(arg == "-m" or (arg.startswith("-m") and not arg.startswith("--")) for arg in rest):
        return run([*pytest, *rest])
    own_workers = any(
        arg in ("-n", "--numprocesses", "no:xdist") or arg.startswith(("-n", "--numprocesses="))
        for arg in rest
    )
    workers = [] if own_workers else ["-n", "2"]
    code = run([*pytest, *workers, "-m", "not slow", *rest])
    if not run_all:
        return code
    slow = run([*pytest, *([] if own_workers else ["-p", "no:xdist"]), "-m", "slow", *rest])
    # 5: nothing selected in one of the two runs (say, -k naming only fast tests) is no failure
    codes = [c for c in (code, slow) if c != 5] or [5]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
