"""Offline fal sandbox: a real HTTP server on localhost speaking fal's queue, run,
storage (CDN) and platform protocols, returning real placeholder media.

    async with Sandbox() as sb:
        os.environ.update(sb.env())
        ...

It serves the endpoints the installed fal-mcp packs register (endpoints.py): each input is
checked against the JSON Schema its pack vendors (validation.py) and each output is drawn in
the shape of the endpoint's output schema (generate.py). `Sandbox(endpoints=[Endpoint(...)])`
serves endpoints of your own instead.

Tests steer it through `sb.state` (same process) or the unauthenticated /_sandbox/
routes (any process): config (job_seconds, queue_ahead, queue_step, log_lines,
usage_forbidden), records (requests, submissions, cancels, jobs, held), fault rules
(`state.add_fault(route=..., status=|delay=|reset=...)` for requests,
`state.add_fault(outcome="model_error"|"never_finish"|"ok"|"hold", ...)` for jobs), the
release of held jobs (`state.release()`, `POST /_sandbox/release`) and reset.

Importing this package is cheap: starlette, uvicorn, PIL and the packs are only loaded by
`start()`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from typing import Any

from .endpoints import Endpoint
from .state import SandboxState

__all__ = ["Endpoint", "Sandbox", "SandboxState", "main"]

log = logging.getLogger("fal_mcp_sandbox")

SANDBOX_KEY = "sandbox-key"


class Sandbox:
    """One sandbox server. Extra keyword arguments set its config (job_seconds=..., ...).

    `endpoints`: what it serves; by default the endpoints of every installed pack.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        endpoints: Iterable[Endpoint] | None = None,
        **config: Any,
    ):
        self.host = host
        self.port = port
        self.state = SandboxState(**config)
        self._endpoints = None if endpoints is None else list(endpoints)
        self._server = None
        self._task: asyncio.Task | None = None
        self._app = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def base_url(self) -> str:
        if not self.started:
            raise RuntimeError("the sandbox is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Settings that point a fal-mcp client at this sandbox."""
        base = self.base_url
        return {
            "FAL_MCP_RUN_URL": base + "/run",
            "FAL_MCP_QUEUE_URL": base + "/queue",
            "FAL_MCP_REST_URL": base + "/rest",
            "FAL_MCP_CDN_URL": base + "/cdn",
            "FAL_MCP_PLATFORM_URL": base + "/platform/v1",
            # The keys its webhooks are signed with (webhooks.py)
            "FAL_MCP_WEBHOOK_JWKS_URL": base + "/.well-known/jwks.json",
            "FAL_KEY": SANDBOX_KEY,
        }

    async def start(self) -> None:
        """Binds and serves in the current event loop; returns once accepting connections."""
        if self.started:
            raise RuntimeError("the sandbox is already started")
        from .app import SandboxApp
        from .endpoints import installed
        from .server import bind, serve

        self.state.endpoints = installed() if self._endpoints is None else {e.id: e for e in self._endpoints}
        sock = bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._app = SandboxApp(self.state)
        try:
            self._server, self._task = await serve(self._app, sock)
        except BaseException:
            sock.close()
            raise
        self.state.base_url = self.base_url
        log.info("fal sandbox serving %d endpoints at %s", len(self.state.endpoints), self.base_url)

    async def stop(self) -> None:
        if not self.started:
            return
        self._app.shutdown()
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=5)
        except asyncio.TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        finally:
            self._task = None

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- running in a background thread (sync tests, subprocess tests) -------------------

    @classmethod
    def start_in_thread(cls, **kwargs: Any) -> Sandbox:
        """Starts a Sandbox(**kwargs) on its own event loop in a daemon thread."""
        sb = cls(**kwargs)
        ready = threading.Event()
        failure: list[BaseException] = []

        async def run() -> None:
            sb._thread_loop = asyncio.get_running_loop()
            sb._thread_stop = asyncio.Event()
            try:
                await sb.start()
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                ready.set()
            try:
                await sb._thread_stop.wait()
            finally:
                await sb.stop()

        sb._thread = threading.Thread(target=asyncio.run, args=(run(),), name="fal-sandbox", daemon=True)
        sb._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the sandbox thread did not start in time")
        if failure:
            raise failure[0]
        return sb

    def stop_thread(self, timeout: float = 10) -> None:
        if self._thread is None:
            return
        self._thread_loop.call_soon_threadsafe(self._thread_stop.set)
        self._thread.join(timeout)
        self._thread = None


DESCRIPTION = (
    "Run the offline fal sandbox alone: a local stand-in for fal.ai (queue, storage, platform API) that "
    "draws placeholder media, for the endpoints of the installed packs. It prints the FAL_MCP_* settings "
    "that point a fal-mcp server at it (as shell exports), then serves until Ctrl-C."
)


def build_parser(prog: str = "python -m fal_mcp_sandbox"):
    """The sandbox's command line: the one parser behind `python -m fal_mcp_sandbox` and `fal-mcp sandbox`."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: a free one)")
    parser.add_argument("--job-seconds", type=float, help="time each job spends running, in seconds")
    parser.add_argument("--queue-ahead", type=int, help="queue positions each job waits through")
    parser.add_argument("--queue-step", type=float, help="seconds per queue position")
    return parser


def read_settings(stream) -> dict[str, str]:
    """The settings a sandbox process prints at start (`export NAME=value` lines, FAL_KEY last), read
    from its stdout: however many there are, so a new one breaks no reader."""
    import shlex

    settings: dict[str, str] = {}
    while "FAL_KEY" not in settings:
        line = stream.readline()
        if not line:
            raise RuntimeError("the sandbox stopped before printing its settings")
        name, _, value = line.strip().removeprefix("export ").partition("=")
        settings[name] = shlex.split(value)[0] if value else ""
    return settings


def main(argv: list[str] | None = None, prog: str = "python -m fal_mcp_sandbox") -> int:
    """`python -m fal_mcp_sandbox` (and `fal-mcp sandbox`, as `prog`): serve until Ctrl-C / SIGTERM."""
    args = build_parser(prog).parse_args(argv)
    given = {"job_seconds": args.job_seconds, "queue_ahead": args.queue_ahead, "queue_step": args.queue_step}
    config = {name: value for name, value in given.items() if value is not None}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve_until_signalled(args.host, args.port, config))
    except KeyboardInterrupt:
        pass
    return 0


async def _serve_until_signalled(host: str, port: int, config: dict) -> None:
    import shlex
    import signal
    import sys

    sb = Sandbox(host=host, port=port, **config)
    await sb.start()
    for name, value in sb.env().items():
        print(f"export {name}={shlex.quote(value)}")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C arrives as KeyboardInterrupt
            pass
    try:
        await stop.wait()
    finally:
        await sb.stop()
