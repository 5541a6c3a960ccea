"""Memory that comes back after large work (an upload, a download, an image made here).

Two things kept a served process large after large transfers, neither of them a leak:

- The cycle collector runs rarely: cli.py freezes what is loaded at start and raises the thresholds
  (a full pass over a busy server stalled the loop ~100 ms), so reference cycles (httpx's clients,
  requests and responses refer to each other; so do exception tracebacks and their frames, which hold
  buffers and images) live until a generation-2 pass that may not come for hours.
- glibc's malloc keeps what is freed: after a large block allocated by mmap is freed, it raises its mmap
  threshold (up to 32 MiB), so later large buffers (Pillow's 16 MiB image blocks, httpx's chunks,
  encoded files) come from the heap and arenas, and freeing them returns nothing to the system until
  `malloc_trim` (worker threads' arenas too: Pillow works in threads).

So the mmap threshold is pinned at start (`pin_mmap_threshold`: large buffers are mapped on their own
and go back when freed), and when calls go idle (`went_idle()`), and after large work done outside calls
(`large_work_done(nbytes)`), `reclaim()` runs on the event loop once it has been quiet for QUIET_SECONDS
(or MOST_DEFERRED after the first request, under a steady stream of large work): one full
`gc.collect()` (the frozen start-up objects are not scanned: a few ms on an idle server) and, on glibc,
`malloc_trim(0)`. Never while calls run (`went_busy()` puts it off until they end): a full pass over
the objects of a thousand calls in flight held the interpreter for half a second, and /health with it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 128 * 1024  # glibc's default, kept (pin_mmap_threshold)
LARGE_BYTES = 8 * 1024 * 1024  # work on at least this much (a file, an image's pixels) is large
QUIET_SECONDS = 2.0
MOST_DEFERRED = 30.0

_timer: asyncio.TimerHandle | None = None
_first: float | None = None  # when the large work waiting for a reclaim began (monotonic)
_trim: Any = None  # glibc's malloc_trim, once looked up; False where there is none
_busy = False  # calls are running: a reclaim waits for went_idle()


def large_work_done(nbytes: int) -> None:
    """Note large work just done (`nbytes`: its size; below LARGE_BYTES this does nothing): a reclaim
    runs once the event loop has seen none for QUIET_SECONDS, or, while calls run, once they end. Call
    it on the event loop; off it (a worker thread), it does nothing."""
    if nbytes >= LARGE_BYTES and not _busy:
        _schedule()


def went_busy() -> None:
    """Note that a call runs: a reclaim waiting to run is put off until went_idle()."""
    global _timer, _busy
    _busy = True
    if _timer is not None:
        _timer.cancel()
        _timer = None


def went_idle() -> None:
    """Note that no call runs any more: the memory the calls used is reclaimed once the loop has been
    quiet for QUIET_SECONDS (so what a burst of small calls left behind comes back too)."""
    global _busy
    _busy = False
    _schedule()


def reclaim_pending() -> bool:
    """Whether a reclaim is scheduled."""
    return _timer is not None


def _schedule() -> None:
    global _timer, _first
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    now = time.monotonic()
    if _timer is not None:
        _timer.cancel()
    if _first is None:
        _first = now
    delay = max(0.0, min(QUIET_SECONDS, _first + MOST_DEFERRED - now))
    _timer = loop.call_later(delay, _reclaim_now)


def _reclaim_now() -> None:
    global _timer, _first
    _timer, _first = None, None
    reclaim(in_thread=True)


def reclaim(*, in_thread: bool = False) -> tuple[int, bool | None]:
    """A full cycle collection, then the memory malloc holds free handed back to the system (glibc
    only): (objects collected, whether malloc_trim released anything; None when it runs in a thread).
    `in_thread`: malloc_trim runs in the event loop's default executor (ctypes lets go of the GIL: a
    long trim of a fragmented heap does not hold up the loop), not here."""
    started = time.perf_counter()
    collected = gc.collect()
    took = (time.perf_counter() - started) * 1000
    trim = _malloc_trim()
    released: bool | None = False
    if trim and in_thread:
        asyncio.get_running_loop().run_in_executor(None, trim, 0)
        released = None
    elif trim:
        released = bool(trim(0))
    log.debug(
        "reclaimed memory: %d objects collected in %.1f ms; heap trimmed: %s", collected, took, released
    )
    return collected, released


def pin_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at its default (128 KiB) instead of letting it rise after each large
    free: every large buffer is then mapped on its own and handed back to the system when freed, not
    carved from the heap where freed memory stays (a 1,000-call soak: RSS growth 19-61 MiB varying
    run to run, 6 MiB with it). Call once at start; False where malloc is not glibc's."""
    import ctypes

    libc = _glibc()
    if libc is None:
        return False
    M_MMAP_THRESHOLD = -3  # malloc.h
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def _glibc() -> Any:
    """The C library, where it is glibc; else None."""
    try:
        import ctypes
        import os

        if (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return ctypes.CDLL(None)
    except (OSError, AttributeError, ValueError):
        pass
    return None


def _malloc_trim() -> Any:
    global _trim
    if _trim is None:
        import ctypes

        libc = _glibc()
        _trim = False if libc is None else libc.malloc_trim
        if _trim:
            _trim.argtypes, _trim.restype = [ctypes.c_size_t], ctypes.c_int
    return _trim
