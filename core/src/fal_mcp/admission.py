"""Admission before payment: a fal request is submitted only when this process can follow it to its end.

Following a call takes file descriptors: the client's connection (HTTP), a connection for the submit
(pooled, shared), one for the call's status stream, one for downloading its output. With too few left,
the status stream cannot connect *after* fal accepted (and charged) the job. So the process splits its
open-files limit up front (`budget`): a reserve for itself (SQLite files, pipes, the listening socket,
logs), the inbound connections the HTTP server may hold (its connection cap, plus a few refused ones
being answered 503), and FDS_PER_CALL for every call in flight. A call that would go beyond its share is
refused before anything is sent to fal, with a "busy, retry in a moment" tool error (`Admission.admit`).

FAL_MCP_MAX_CALLS_IN_FLIGHT sets the cap (never above what the descriptors allow: the smaller one wins,
with a warning); by default it is what the descriptors allow. The count is per process (each --workers
process has its own limit and its own share).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .config import ConfigError
from .errors import ToolError

log = logging.getLogger(__name__)

FDS_PER_CALL = 3  # a status stream, a download, a share of the submit/result pool
RESERVE_FDS = 100  # the process itself: SQLite (db, -wal, -shm per thread), pipes, logs, sockets
CONNECTION_SHARE = 0.4  # at most this share of the non-reserved descriptors for inbound connections
UNLIMITED_FILES = 65536


def open_files_limit() -> int:
    """This process's soft limit on open files (65,536 where unlimited or unknown)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return UNLIMITED_FILES
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED_FILES if soft == resource.RLIM_INFINITY else int(soft)


def overflow_for(max_connections: int, files: int | None = None) -> int:
    """Connections beyond the cap held briefly while they are answered 503 (beyond these, a new connection
    is closed at once): as many as the cap where descriptors are plenty (a tenth of them), at least 16."""
    spare = max((files if files is not None else open_files_limit()) - RESERVE_FDS, 0)
    return min(max_connections, max(16, spare // 10))


@dataclass(frozen=True)
class Budget:
    files: int  # the open-files limit split
    max_connections: int  # inbound connections held at most (0 without an HTTP transport)
    max_calls: int  # calls in flight at most
    wanted_connections: int | None = None  # the configured cap, when the descriptors forced a lower one
    wanted_calls: int | None = None  # FAL_MCP_MAX_CALLS_IN_FLIGHT, when the descriptors forced a lower one


def configured_calls(env=None) -> int | None:
    raw = (env if env is not None else os.environ).get("FAL_MCP_MAX_CALLS_IN_FLIGHT", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"FAL_MCP_MAX_CALLS_IN_FLIGHT={raw!r} must be a whole number, at least 1")
    return int(raw)


def budget(files: int, max_connections: int | None, wanted_calls: int | None) -> Budget:
    """Split `files` descriptors: the reserve, inbound connections (`max_connections`, the configured cap,
    None without HTTP; lowered to CONNECTION_SHARE of what is left when that is less) with their
    overflow, then FDS_PER_CALL a call."""
    spare = max(files - RESERVE_FDS, 2 * FDS_PER_CALL)
    connections = 0
    lowered_connections = None
    if max_connections is not None:
        connections = min(max_connections, max(1, int(spare * CONNECTION_SHARE)))
        if connections < max_connections:
            lowered_connections = max_connections
        spare -= connections + overflow_for(connections, files)
    allowed = max(1, spare // FDS_PER_CALL)
    calls = allowed if wanted_calls is None else min(wanted_calls, allowed)
    return Budget(
        files=files,
        max_connections=connections,
        max_calls=calls,
        wanted_connections=lowered_connections,
        wanted_calls=wanted_calls if wanted_calls is not None and wanted_calls > allowed else None,
    )


_inbound_connections: int | None = None  # the HTTP transport's connection cap, once it is known


def set_inbound_connections(max_connections: int | None) -> None:
    """Called by the HTTP transport with its (budgeted) connection cap before it serves."""
    global _inbound_connections
    _inbound_connections = max_connections


class Busy(ToolError):
    def __init__(self, in_flight: int, limit: int) -> None:
        super().__init__(
            f"The server is busy: {in_flight} calls are in flight, its limit. Nothing was submitted to fal "
            "and nothing was charged; retry in a moment.",
            kind="refused",
        )


class Admission:
    """The calls in flight of one process, counted against its cap. The cap is computed on first use
    (after the HTTP transport has raised the open-files limit and said its connection cap)."""

    def __init__(self, limit: int | None = None) -> None:
        self._limit = limit
        self.in_flight = 0
        self.refused = 0

    @property
    def limit(self) -> int:
        if self._limit is None:
            split = budget(open_files_limit(), _inbound_connections, configured_calls())
            if split.wanted_calls is not None:
                log.warning(
                    "FAL_MCP_MAX_CALLS_IN_FLIGHT=%d is more than the open files limit (%d) can follow: %d",
                    split.wanted_calls,
                    split.files,
                    split.max_calls,
                )
            self._limit = split.max_calls
        return self._limit

    def admit(self) -> None:
        """Take a place for a call about to submit to fal, or raise Busy (nothing submitted)."""
        if self.in_flight >= self.limit:
            self.refused += 1
            raise Busy(self.in_flight, self.limit)
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
