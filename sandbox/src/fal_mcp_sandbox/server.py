"""Runs the sandbox app with uvicorn as a task in the current event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from .app import ConnectionReset, SandboxApp


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the host process owns SIGINT/SIGTERM, not the sandbox


def _quiet_resets(record: logging.LogRecord) -> bool:
    # A "reset" fault ends the response by raising ConnectionReset; uvicorn would log it
    # as an application error.
    return not (record.exc_info and isinstance(record.exc_info[1], ConnectionReset))


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (else Nagle
    # and delayed ACKs add ~40 ms to every small response)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve(app: SandboxApp, sock: socket.socket) -> tuple[uvicorn.Server, asyncio.Task]:
    """Starts serving on `sock`; returns once the server accepts connections."""
    error_log = logging.getLogger("uvicorn.error")
    if _quiet_resets not in error_log.filters:
        error_log.addFilter(_quiet_resets)
    config = uvicorn.Config(
        app,
        log_config=None,  # never touch logging config or stdout
        access_log=False,
        lifespan="off",
        http="h11",
        ws="none",
        interface="asgi3",
        timeout_graceful_shutdown=1,
        # Idle kept-alive connections are closed by the clients (httpx: after 5 s), never raced by the
        # server closing them too as one is reused (uvicorn's default is 5 s as well): a submit sent on a
        # connection closed under it fails, and is not retried (it may have started a paid job).
        timeout_keep_alive=75,
        server_header=False,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="fal-sandbox")
    while not server.started:
        if task.done():
            task.result()  # raises the startup error
            raise RuntimeError("sandbox server exited during startup")
        await asyncio.sleep(0.005)
    return server, task
