"""A newcomer's first five minutes: `--version`, one-line errors for a busy port and an unknown pack,
a clean Ctrl-C, the hint `fal-mcp serve` gives on a terminal (and only there), dev.py's progress.

Every server here is a real subprocess; the tests wait on its output lines (with a generous hang
guard), never on sleeps."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import pytest

from fal_mcp.config import ConfigError, Settings
from fal_mcp.plugins import load_plugins
from fal_mcp_sandbox.testing import clean_env, run_cli

ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD = 60  # seconds: only to fail instead of hanging, never a timing assertion
# The hint's first line, and its last with --sandbox: printed once the server handles Ctrl-C.
HINT_START = "Ctrl-C stops it"
HINT_END = "--sandbox is the offline fal stand-in"


def server(args: list[str], stdin=subprocess.PIPE, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fal_mcp.cli", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(env),
    )


class Lines:
    """A process's stderr, read line by line in a thread: `wait_for(text)` returns the line holding it."""

    def __init__(self, stream) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for raw in stream:
            self._queue.put(raw.decode(errors="replace"))
        self._queue.put(None)

    def wait_for(self, text: str) -> str:
        while True:
            try:
                line = self._queue.get(timeout=HANG_GUARD)
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} within {HANG_GUARD} s: {self.seen}") from None
            if line is None:
                raise AssertionError(f"the stream ended before a line with {text!r}: {''.join(self.seen)}")
            self.seen.append(line)
            if text in line:
                return line

    def rest(self) -> str:
        """Everything after what was waited for, once the process has ended."""
        tail = []
        while (line := self._queue.get(timeout=HANG_GUARD)) is not None:
            tail.append(line)
        self.seen += tail
        return "".join(tail)


@contextmanager
def stopped_at_the_end(process: subprocess.Popen):
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=HANG_GUARD)


@contextmanager
def on_a_terminal(args: list[str]):
    """`fal-mcp <args>` with a pseudo-terminal as stdin (stdout and stderr pipes): (process, stderr
    lines, the terminal's master side)."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    try:
        process = server(args, stdin=slave)
    finally:
        os.close(slave)
    try:
        with stopped_at_the_end(process):
            yield process, Lines(process.stderr), master
    finally:
        os.close(master)


# --version


def test_version_names_the_core_and_each_pack():
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"fal-mcp-core {version('fal-mcp-core')} (Python ")
    for pack in ("image", "video", "audio", "utility"):
        expected = f"fal-mcp-{pack} {version(f'fal-mcp-{pack}')}"
        assert any(line.split() == [pack, *expected.split()] for line in lines), done.stdout
    assert f"sandbox: fal-mcp-sandbox {version('fal-mcp-sandbox')}" in lines


# A busy port


@pytest.mark.parametrize("sandbox", [[], ["--sandbox"]], ids=["plain", "sandbox"])
def test_a_busy_port_is_one_line(sandbox):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("serve", *sandbox, "--transport", "http", "--port", str(port))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"fal-mcp: cannot listen on 127.0.0.1:{port}: port {port} is already in use (another server "
        "listens there); choose another with --port N, or --port 0 for any free one"
    ]


def test_a_port_taken_after_the_check_is_one_line_too():
    """The port is checked before anything starts; one taken between that check and the server's own
    bind (here: the check skipped) is reported the same way, not as a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        script = (
            "import sys, fal_mcp.cli as cli; cli._check_listen = lambda host, port: None; "
            f"sys.exit(cli.main(['serve', '--transport', 'http', '--port', '{port}']))"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=HANG_GUARD,
        )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"fal-mcp: cannot listen on 127.0.0.1:{port}: port {port}")


# Unknown pack names


def test_an_unknown_pack_in_fal_mcp_plugins_refuses_to_start():
    done = run_cli("serve", "--sandbox", env={"FAL_MCP_PLUGINS": "imge"})
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "fal-mcp: configuration error: FAL_MCP_PLUGINS names an unknown pack: 'imge' (did you mean "
        "'image'?). The installed packs are: audio, core, image, utility, video (a pack's distribution "
        "name works too)"
    ]


def test_every_unknown_name_is_named():
    done = run_cli("tools", env={"FAL_MCP_PLUGINS": "image,fal-mcp-vidoe,nothing-like-it"})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "names unknown packs: 'fal-mcp-vidoe' (did you mean 'fal-mcp-video'?), 'nothing-like-it'." in (
        done.stderr
    )


def test_known_names_still_work():
    """Pack names, distribution names and the core's own pack, as before."""
    for names in ("image,utility", "fal-mcp-image", "core", "core,fal-mcp-core"):
        done = run_cli("tools", "--json", env={"FAL_MCP_PLUGINS": names})
        assert done.returncode == 0, (names, done.stderr)
        assert "submit_job" in {row["name"] for row in json.loads(done.stdout)}


def test_an_unknown_pack_in_fal_mcp_disable_plugins_is_warned_about():
    """Disabling a pack that is not installed is harmless, so it starts; but loudly, naming the name."""
    done = run_cli("tools", "--json", env={"FAL_MCP_DISABLE_PLUGINS": "vdieo"})
    assert done.returncode == 0, done.stderr
    assert "generate_video" in {row["name"] for row in json.loads(done.stdout)}
    warning = next(line for line in done.stderr.splitlines() if "FAL_MCP_DISABLE_PLUGINS" in line)
    assert "WARNING" in warning and "FAL_MCP_DISABLE_PLUGINS names an unknown pack: 'vdieo'" in warning
    assert "did you mean 'video'?" in warning and "audio, core, image, utility, video" in warning


def test_load_plugins_refuses_an_unknown_name():
    with pytest.raises(ConfigError, match="'imge'.*did you mean 'image'"):
        load_plugins(Settings.from_env({"FAL_MCP_PLUGINS": "imge"}))


# Ctrl-C


def test_ctrl_c_stops_an_http_server_cleanly():
    process = server(["serve", "--sandbox", "--transport", "http", "--host", "127.0.0.1", "--port", "0"])
    with stopped_at_the_end(process):
        lines = Lines(process.stderr)
        lines.wait_for("fal-mcp: listening on http://127.0.0.1:")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=HANG_GUARD) in (0, 130)
        rest = lines.rest()
    assert "Traceback" not in rest and len(rest.splitlines()) <= 1, rest
    assert process.stdout.read() == b""


def test_ctrl_c_stops_a_server_on_a_terminal_cleanly():
    """On a terminal, stdin is read where nothing interrupts the read: Ctrl-C must still stop it, at
    once, and quietly."""
    with on_a_terminal(["serve", "--sandbox"]) as (process, lines, _):
        lines.wait_for(HINT_END)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=HANG_GUARD) in (0, 130)
        rest = lines.rest()
        assert "Traceback" not in rest and len(rest.splitlines()) <= 1, rest
        assert process.stdout.read() == b""


def test_ctrl_c_stops_dual_on_a_terminal_cleanly():
    with on_a_terminal(["serve", "--sandbox", "--transport", "dual", "--port", "0"]) as (process, lines, _):
        lines.wait_for(HINT_END)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=HANG_GUARD) in (0, 130)
        assert "Traceback" not in lines.rest()
        assert process.stdout.read() == b""


# The hint on a terminal


def test_serve_on_a_terminal_says_how_to_connect_a_client():
    with on_a_terminal(["serve", "--sandbox"]) as (process, lines, master):
        lines.wait_for(HINT_END)
        # Still an MCP server on stdin/stdout: a request typed on the terminal is answered on stdout.
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        os.write(master, json.dumps(request).encode() + b"\n")
        answer = json.loads(process.stdout.readline())
        assert answer["id"] == 1 and "result" in answer
        os.write(master, b"\x04")  # Ctrl-D: end of input, as a client leaving
        assert process.wait(timeout=HANG_GUARD) == 0
        hint = "".join(lines.seen) + lines.rest()
        assert process.stdout.read() == b""  # nothing but the protocol on stdout
    assert "An MCP server speaks the protocol on stdin/stdout" in hint
    assert "claude_desktop_config.json" in hint
    snippet = json.loads(next(line for line in hint.splitlines() if '"mcpServers"' in line))
    entry = snippet["mcpServers"]["fal"]
    assert entry["args"] == ["serve", "--sandbox"]
    assert os.path.isabs(entry["command"]) and os.path.basename(entry["command"]) == "fal-mcp"
    assert "serve --sandbox --transport http" in hint
    assert "--sandbox is the offline fal stand-in" in hint
    assert "Traceback" not in hint


def test_without_a_key_the_hint_offers_the_sandbox():
    with on_a_terminal(["serve"]) as (process, lines, master):
        lines.wait_for("No fal key yet?")
        os.write(master, b"\x04")
        assert process.wait(timeout=HANG_GUARD) == 0
        hint = "".join(lines.seen) + lines.rest()
    snippet = json.loads(next(line for line in hint.splitlines() if '"mcpServers"' in line))
    assert snippet["mcpServers"]["fal"]["args"] == ["serve"]
    assert snippet["mcpServers"]["fal"]["env"] == {"FAL_KEY": "your-fal-key"}
    assert "No fal key yet?" in hint and "serve --sandbox" in hint


def test_no_hint_when_a_client_starts_it_with_pipes():
    process = server(["serve", "--sandbox"])
    with stopped_at_the_end(process):
        lines = Lines(process.stderr)
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        process.stdin.write(json.dumps(request).encode() + b"\n")
        process.stdin.flush()
        # answered: the server is serving, so a hint would have been printed by now
        assert json.loads(process.stdout.readline())["id"] == 1
        process.stdin.close()
        assert process.wait(timeout=HANG_GUARD) == 0
        stderr = lines.rest()
    assert "offline fal sandbox" in stderr
    assert "claude_desktop_config" not in stderr and HINT_START not in stderr


# dev.py


@pytest.fixture(scope="module")
def dev():
    spec = importlib.util.spec_from_file_location("dev_under_test", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_step_off_a_terminal_is_a_line_when_it_starts_and_one_when_it_ends(dev):
    stream = io.StringIO()
    step = dev.Step(2, 8, "installing fal-mcp-core (core/)", stream=stream)
    step.status("Collecting pydantic")  # off a terminal: not shown
    step.done("41 packages installed")
    first, second = stream.getvalue().splitlines()
    assert first == "dev.py: [2/8] installing fal-mcp-core (core/) ..."
    assert second.startswith("dev.py: [2/8] installing fal-mcp-core (core/): done in ")
    assert second.endswith(" s, 41 packages installed")


def test_a_step_on_a_terminal_is_one_line_rewritten(dev):
    stream = Terminal()
    step = dev.Step(3, 8, "installing fal-mcp-sandbox (sandbox/)", stream=stream)
    step.status("Collecting av>=14")
    step.done()
    written = stream.getvalue()
    assert written.count("\n") == 1 and written.endswith("\n")
    updates = written.split("\r\033[K")[1:]
    assert updates[0] == "dev.py: [3/8] installing fal-mcp-sandbox (sandbox/) ..."
    assert updates[1] == "dev.py: [3/8] installing fal-mcp-sandbox (sandbox/) ... Collecting av>=14"
    assert updates[2].startswith("dev.py: [3/8] installing fal-mcp-sandbox (sandbox/): done in ")


def test_durations(dev):
    assert dev.took(4.04) == "4.0 s"
    assert dev.took(125) == "2 min 05 s"


def fake_pip(tmp_path: Path, output: str, status: int) -> Path:
    """An executable standing in for `python -m pip install ...`: prints `output`, exits `status`."""
    script = tmp_path / "python"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({output!r})\nsys.exit({status})\n")
    script.chmod(0o755)
    return script


@pytest.mark.skipif(os.name == "nt", reason="a script as the interpreter")
def test_pip_is_summarized_and_logged(dev, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dev, "LOG", tmp_path / "setup.log")
    output = "Collecting foo\nWARNING: Location 'x' is ignored\nSuccessfully installed bar-2 foo-1\n"
    step = dev.Step(1, 1, "installing foo", stream=io.StringIO())
    dev.pip_install(step, fake_pip(tmp_path, output, 0), ["-e", "foo"])
    assert step.stream.getvalue().splitlines()[-1].endswith(", 2 packages installed")
    assert capsys.readouterr().err == ""  # pip's own output is not shown...
    assert output in (tmp_path / "setup.log").read_text()  # ...but kept


@pytest.mark.skipif(os.name == "nt", reason="a script as the interpreter")
def test_a_failing_pip_shows_its_output_and_stops(dev, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dev, "LOG", tmp_path / "setup.log")
    step = dev.Step(1, 1, "installing foo", stream=io.StringIO())
    with pytest.raises(SystemExit) as stop:
        dev.pip_install(step, fake_pip(tmp_path, "ERROR: No matching distribution found for foo\n", 1), [])
    assert stop.value.code == 1
    assert "FAILED" in step.stream.getvalue()
    err = capsys.readouterr().err
    assert "ERROR: No matching distribution found for foo" in err and "setup.log" in err


def test_no_ensurepip_says_what_to_install(dev, tmp_path, monkeypatch, capsys):
    """Debian's and Ubuntu's python3 come without ensurepip unless python3-venv is installed."""
    venv_dir = tmp_path / ".venv"
    monkeypatch.setattr(dev, "VENV", venv_dir)
    monkeypatch.setattr(dev, "STAMP", venv_dir / ".installed")
    monkeypatch.setattr(dev, "LOG", venv_dir / "setup.log")

    def no_ensurepip(self, env_dir):
        raise subprocess.CalledProcessError(1, ["python3", "-m", "ensurepip"])

    monkeypatch.setattr(dev.venv.EnvBuilder, "create", no_ensurepip)
    with pytest.raises(SystemExit) as stop:
        dev.ensure_environment()
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "for the first time" in err and "FAILED" in err
    assert "sudo apt install python3-venv" in err and "Traceback" not in err


def test_a_child_killed_by_a_signal_exits_as_a_shell_says(dev):
    kill = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    assert dev.run([sys.executable, "-c", kill]) == 128 + signal.SIGTERM


@pytest.fixture
def set_up_copy(tmp_path) -> Path:
    """dev.py copied into a tree of its own whose .venv matches every pyproject.toml (dev.py's
    fingerprint), its fal-mcp this environment's: dev.py there installs nothing, and can never
    reinstall the environment these tests run in."""
    import shutil

    shutil.copy(ROOT / "dev.py", tmp_path / "dev.py")
    (tmp_path / "core").mkdir()
    shutil.copy(ROOT / "core" / "pyproject.toml", tmp_path / "core" / "pyproject.toml")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "fal-mcp").symlink_to(Path(sys.executable).parent / "fal-mcp")
    spec = importlib.util.spec_from_file_location("dev_copy", tmp_path / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / ".venv" / ".installed").write_text(module.project_fingerprint())
    return tmp_path


def test_setup_on_a_set_up_tree_says_so_and_what_to_run(set_up_copy):
    done = subprocess.run(
        [sys.executable, "dev.py", "setup"],
        cwd=set_up_copy,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "dev.py: .venv is up to date (it matches every pyproject.toml): nothing to install",
        "dev.py: fal-mcp is .venv/bin/fal-mcp (no need to activate .venv). Next:",
        "    .venv/bin/fal-mcp serve --sandbox  # the server on the offline fal sandbox: no key needed",
        "    .venv/bin/fal-mcp plugins          # the packs that loaded",
        "    python3 dev.py test                # the test suite",
    ]


@pytest.mark.skipif(os.name == "nt", reason="process groups and a pseudo-terminal")
def test_ctrl_c_on_dev_py_serve_is_no_traceback(set_up_copy):
    """Ctrl-C on a terminal signals the whole foreground process group: dev.py and the server."""
    import pty

    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "dev.py", "serve"],
            cwd=set_up_copy,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(),
            start_new_session=True,  # a process group of its own, as a shell's job
        )
    finally:
        os.close(slave)
    try:
        with stopped_at_the_end(process):
            lines = Lines(process.stderr)
            lines.wait_for(HINT_END)
            os.killpg(process.pid, signal.SIGINT)
            assert process.wait(timeout=HANG_GUARD) == 130
            rest = lines.rest()
            assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
            assert process.stdout.read() == b""
    finally:
        os.close(master)
        try:
            os.killpg(process.pid, signal.SIGKILL)  # dev.py's child too, if a check above failed
        except ProcessLookupError:
            pass
