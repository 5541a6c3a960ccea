"""`fal-mcp serve --transport http --workers N`: N worker processes behind one port.

The supervisor (this process) binds the listening socket once and hands it to N workers, each an
ordinary `fal-mcp serve --transport http --workers 1` that inherits the socket (FAL_MCP_LISTEN_FD) and
accepts from it: the kernel gives each new connection to whichever worker accepts first, so a busy
worker takes fewer, and a worker that dies loses no queued connection (the others keep accepting).
A worker that dies is started again (after a pause if it died young). SIGTERM or SIGINT stops them all.

What the workers share:
- the job store: a SQLite file in WAL mode (one machine; the default FAL_MCP_STORE) or Redis, never an
  in-memory one: a job submitted through one worker is found, checked, cancelled or resumed by any other
  (their leases in the store say which follows it);
- with --sandbox, one sandbox, run here in a thread, so every worker talks to the same fake fal.

What they do not share: streamable HTTP sessions (and the SSE transport's streams) live in the process
that opened them, and a client's next request may reach another worker. So with N > 1 the streamable
HTTP transport runs stateless (each request stands alone; callers are told apart by their bearer token
or OAuth identity); SSE and dual (stdio) are one process. The outputs a call made (its `resources`) are
kept in the worker's memory: a client reads them through the same worker's answer (their fal URLs and,
with FAL_MCP_OUTPUT_DIR, the saved files, work from anywhere).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

log = logging.getLogger(__name__)
READY_TIMEOUT = 120.0  # seconds a worker may take to start serving
YOUNG = 5.0  # a worker that dies younger than this is restarted after a pause


def default_workers(stateless: bool) -> int:
    """FAL_MCP_WORKERS, else the number of cores where sessions allow it (stateless), else 1."""
    raw = os.environ.get("FAL_MCP_WORKERS", "").strip()
    if raw:
        from .config import ConfigError

        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"FAL_MCP_WORKERS={raw!r} must be a whole number, at least 1")
        return int(raw)
    return (os.cpu_count() or 1) if stateless else 1


def in_memory(store_url: str | None) -> bool:
    """Whether FAL_MCP_STORE keeps jobs in one process's memory (which workers cannot share)."""
    if not store_url:
        return False
    return ":memory:" in store_url or store_url.rstrip("/") in ("sqlite:", "memory:")


class Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: subprocess.Popen | None = None
        self.ready_fd: int | None = None
        self.ready = False
        self.started_at = 0.0
        self.restart_at: float | None = None


def supervise(
    *,
    count: int,
    host: str,
    port: int,
    sandbox: bool,
    store_url: str | None,
    serve_args: list[str],
    listen_error,
) -> int:
    """Run `count` workers until SIGTERM/SIGINT; returns the exit status. `serve_args`: the options the
    workers are started with besides the transport; `listen_error(exc)` turns a bind failure into the
    CLI's error."""
    from .config import ConfigError
    from .http import listen_url, listening_socket

    if in_memory(store_url):
        raise ConfigError(
            f"FAL_MCP_STORE={store_url!r} is in one process's memory: --workers N needs a store they share "
            "(a SQLite file, or redis://...), or --workers 1"
        )
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        raise listen_error(exc) from None
    port = sock.getsockname()[1]
    env = dict(os.environ)
    env.pop("FAL_MCP_WORKERS", None)
    env.update(
        {
            "FAL_MCP_LISTEN_FD": str(sock.fileno()),
            "FAL_MCP_WORKER_COUNT": str(count),
            "FAL_MCP_STATELESS": "1",
        }
    )
    box = None
    scratch = None
    stopping = threading.Event()
    workers = [Worker(index) for index in range(count)]
    status = 0
    try:
        if sandbox:
            from fal_mcp_sandbox import Sandbox

            box = Sandbox.start_in_thread()
            env.update(box.env())
            print(
                f"fal-mcp: using the offline fal sandbox at {box.base_url} (placeholder media, no key needed)",
                file=sys.stderr,
            )
            if not store_url:  # the workers' jobs, in a file they share for as long as the sandbox lives
                scratch = tempfile.TemporaryDirectory(prefix="fal-mcp-workers-")
                env["FAL_MCP_STORE"] = f"sqlite:///{os.path.join(scratch.name, 'jobs.sqlite3')}"

        def stop(signum, frame) -> None:
            stopping.set()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for worker in workers:
                _start(worker, env, serve_args, sock.fileno())
            deadline = time.monotonic() + READY_TIMEOUT
            while not stopping.is_set() and not all(w.ready for w in workers):
                for worker in workers:
                    _read_ready(worker)
                    code = worker.process.poll() if worker.process else None
                    if code is not None and not worker.ready:
                        print(
                            f"fal-mcp: worker {worker.index} stopped while starting (exit {code})",
                            file=sys.stderr,
                        )
                        return code or 1
                if time.monotonic() > deadline:
                    print("fal-mcp: the workers did not start in time", file=sys.stderr)
                    return 1
                stopping.wait(0.02)
            if not stopping.is_set():
                print(
                    f"fal-mcp: listening on {listen_url(host, port)} (/mcp, /health), {count} worker processes "
                    "(stateless streamable HTTP; each worker's /health names it)",
                    file=sys.stderr,
                )
            while not stopping.is_set():
                now = time.monotonic()
                for worker in workers:
                    _read_ready(worker)
                    if worker.restart_at is not None:
                        if now >= worker.restart_at:
                            _start(worker, env, serve_args, sock.fileno())
                        continue
                    process = worker.process
                    code = process.poll() if process is not None else -1
                    if code is None:
                        continue
                    young = now - worker.started_at < YOUNG
                    print(
                        f"fal-mcp: worker {worker.index} (pid {process.pid if process else '?'}) stopped (exit {code}): "
                        f"starting it again{' in 1 s' if young else ''}",
                        file=sys.stderr,
                    )
                    _close_ready(worker)
                    worker.restart_at = now + (1.0 if young else 0.0)
                stopping.wait(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            _stop_all(workers)
    finally:
        sock.close()
        if box is not None:
            box.stop_thread()
        if scratch is not None:
            scratch.cleanup()
    return status


def _start(worker: Worker, env: dict[str, str], serve_args: list[str], listen_fd: int) -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    child_env = {**env, "FAL_MCP_WORKER_INDEX": str(worker.index), "FAL_MCP_READY_FD": str(write_end)}
    command = [
        sys.executable,
        "-m",
        "fal_mcp.cli",
        "serve",
        "--transport",
        "http",
        "--workers",
        "1",
        *serve_args,
    ]
    try:
        worker.process = subprocess.Popen(
            command, env=child_env, stdin=subprocess.DEVNULL, pass_fds=(listen_fd, write_end)
        )
    finally:
        os.close(write_end)
    worker.ready_fd, worker.ready = read_end, False
    worker.started_at, worker.restart_at = time.monotonic(), None
    log.info("worker %d started (pid %d)", worker.index, worker.process.pid)


def _read_ready(worker: Worker) -> None:
    if worker.ready or worker.ready_fd is None:
        return
    try:
        data = os.read(worker.ready_fd, 16)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if data:
        worker.ready = True
    _close_ready(worker)


def _close_ready(worker: Worker) -> None:
    if worker.ready_fd is not None:
        try:
            os.close(worker.ready_fd)
        except OSError:
            pass
        worker.ready_fd = None


def _stop_all(workers: list[Worker], grace: float = 10.0) -> None:
    running = [w.process for w in workers if w.process is not None and w.process.poll() is None]
    for process in running:
        try:
            process.send_signal(signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    for process in running:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    for worker in workers:
        _close_ready(worker)
