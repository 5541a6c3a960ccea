"""Whose fal key pays for a call (FAL_MCP_KEY_MODE), decided in one place.

- `server` (the default): the server's own key (FAL_KEY) for everyone.
- `header`: each user's own key, sent with every HTTP request in the `X-Fal-Key` header.
- `file`: each signed-in user's key, looked up by their OAuth subject in FAL_MCP_KEYS_FILE (a JSON
  object `{"<subject>": "<key>", ...}`; `"*"` is the key of everyone else), read again when it changes.

A user's key lives in memory only, for as long as a call of theirs (or a job it started) uses it: it
is never logged, never written to the job store or to disk, never put in a result or an error (every
key in use is scrubbed from messages and logs like the server's own), and never used for anyone else's
call. A job remembers its owner, not the key: following it again after a restart needs the owner's
key again, from the owner's next request.

The gateway keeps one fal client per key in use (`ClientPool`), named by a digest of the key, the least
recently used idle ones closed beyond CLIENTS_KEPT.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import ConfigError
from .errors import ToolError

if TYPE_CHECKING:
    from .config import Settings
    from .owners import Principal

log = logging.getLogger(__name__)

MODES = ("server", "header", "file")
HEADER = "X-Fal-Key"
# The job tools answer from the job store: they run without a key (and say when they would need one).
WITHOUT_KEY = frozenset({"check_job", "list_jobs", "cancel_job"})
# fal clients kept, one per key; beyond this, the least recently used idle ones are closed.
CLIENTS_KEPT = 64
# What a fal key may look like: `<id>:<secret>` or one token, visible ASCII, of a sane length.
_KEY_SHAPE = re.compile(r"[!-~]{8,512}")

# Every user key alive in this process, by digest: what errors.scrub and the log filter take out.
_live: weakref.WeakValueDictionary[str, FalKey] = weakref.WeakValueDictionary()
_live_lock = threading.Lock()


def digest_of(value: str) -> str:
    return hashlib.sha256(b"fal-mcp fal key\0" + value.encode()).hexdigest()[:32]


@dataclass(frozen=True, eq=False)
class FalKey:
    """A user's fal key. Its repr shows a digest only; make one with `FalKey.of`."""

    value: str = field(repr=False)
    digest: str
    forms: tuple[str, ...] = field(repr=False, default=())  # as errors.secret_forms spells them

    @classmethod
    def of(cls, value: str) -> FalKey:
        """The one live FalKey of `value` (registered for scrubbing while anything holds it)."""
        from .errors import secret_forms

        digest = digest_of(value)
        with _live_lock:
            known = _live.get(digest)
            if known is not None and known.value == value:
                return known
            key = cls(value, digest, tuple(secret_forms([value])))
            _live[digest] = key
            return key

    def __repr__(self) -> str:
        return f"FalKey(digest={self.digest[:12]})"


def live_forms() -> list[str]:
    """Every form of every user key alive in this process (errors.scrub removes them)."""
    with _live_lock:
        keys = list(_live.values())
    return [form for key in keys for form in key.forms]


class KeyRefused(ToolError):
    """The call has no fal key to use: nothing was sent to fal."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="refused")


def missing_key_message(settings: Settings) -> str:
    if settings.key_mode == "header":
        return (
            f"This server uses each user's own fal key: send yours in the {HEADER} header of every HTTP "
            "request (a key from https://fal.ai/dashboard/keys). Nothing was sent to fal."
        )
    return (
        "This server uses a fal key per signed-in user, and none is set up for you (no entry for your "
        "sign-in in FAL_MCP_KEYS_FILE): ask the server's operator to add one. Nothing was sent to fal."
    )


def check_mode(settings: Settings, transport: str) -> None:
    """Refuse to start what cannot work: header mode without HTTP, a keys file that cannot be read or
    that others may read. ConfigError says why."""
    if settings.key_mode == "header" and transport in ("stdio", "dual"):
        raise ConfigError(
            f"FAL_MCP_KEY_MODE=header takes each user's fal key from the {HEADER} header of their HTTP "
            f"requests; the {transport} transport has {'a stdio side without' if transport == 'dual' else 'no'} "
            "headers. Serve with --transport http or sse, or use FAL_MCP_KEY_MODE=server or file."
        )
    if settings.key_mode == "file":
        KeysFile(settings.keys_file or "").load(at_start=True)


class KeysFile:
    """FAL_MCP_KEYS_FILE: subject -> key, read again whenever the file changes (checked per call, in a
    worker thread). A change that cannot be read (a half-written file, loosened permissions) keeps the
    keys read last, with a warning."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._signature: tuple[int, int, int, int] | None = None  # of the file the keys were read from
        self._keys: dict[str, FalKey] = {}
        self._problem: tuple[str, tuple[int, int, int, int] | None] | None = None  # warned of already
        self._lock = threading.Lock()

    def load(self, at_start: bool = False) -> dict[str, FalKey]:
        """The keys by subject, read again if the file changed. At start, any problem is a ConfigError."""
        with self._lock:
            try:
                status = os.stat(self.path)
            except OSError as exc:
                return self._keep(ConfigError(self._os_problem(exc)), None, at_start)
            signature = (status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size)
            if signature == self._signature or (self._problem is not None and self._problem[1] == signature):
                return self._keys
            try:
                keys = self._read()
            except OSError as exc:
                return self._keep(ConfigError(self._os_problem(exc)), signature, at_start)
            except ConfigError as exc:
                return self._keep(exc, signature, at_start)
            self._keys, self._signature, self._problem = keys, signature, None
            log.info("FAL_MCP_KEYS_FILE read: keys for %d subject(s)", len(keys))
            return keys

    def _keep(
        self, problem: ConfigError, signature: tuple[int, int, int, int] | None, at_start: bool
    ) -> dict[str, FalKey]:
        """A file that cannot be used: a ConfigError at start, else the keys read last (warned of once)."""
        if at_start or self._signature is None:
            raise problem
        if self._problem != (str(problem), signature):
            log.warning("FAL_MCP_KEYS_FILE cannot be used (%s); its keys as read last stay in use", problem)
            self._problem = (str(problem), signature)
        return self._keys

    def _os_problem(self, exc: OSError) -> str:
        return f"FAL_MCP_KEYS_FILE={self.path!r} cannot be read: {exc.strerror or exc}"

    def _read(self) -> dict[str, FalKey]:
        import stat

        with open(self.path, "rb") as file:
            status = os.fstat(file.fileno())  # of what was opened: no race with a swap after a check
            if not stat.S_ISREG(status.st_mode):
                raise ConfigError(f"FAL_MCP_KEYS_FILE={self.path!r} is not a regular file")
            if status.st_mode & 0o077:
                raise ConfigError(
                    f"FAL_MCP_KEYS_FILE={self.path!r} is accessible to other users (mode "
                    f"{stat.S_IMODE(status.st_mode):o}): it holds fal keys. Make it readable by the "
                    f"server's user only: chmod 600 {self.path}"
                )
            raw = file.read(1024 * 1024 + 1)
        if len(raw) > 1024 * 1024:
            raise ConfigError(f"FAL_MCP_KEYS_FILE={self.path!r} is larger than 1 MB")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(
                f"FAL_MCP_KEYS_FILE={self.path!r} is not JSON (expected an object: subject -> fal key)"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(f"FAL_MCP_KEYS_FILE={self.path!r} must hold a JSON object: subject -> fal key")
        keys = {}
        for subject, value in data.items():
            if not isinstance(value, str) or not _KEY_SHAPE.fullmatch(value.strip()):
                # the subject is named, never the value
                raise ConfigError(
                    f"FAL_MCP_KEYS_FILE={self.path!r}: the entry for {subject[:100]!r} is not a fal key "
                    "(a string of 8-512 visible characters)"
                )
            keys[subject] = FalKey.of(value.strip())
        return keys


class KeyResolver:
    """The one place a call's fal key is decided (see the module's doc). One per ToolTable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mode = settings.key_mode
        self.file = KeysFile(settings.keys_file or "") if self.mode == "file" else None
        if self.file is not None:
            self.file.load(at_start=True)  # ConfigError: the server does not start

    @property
    def required(self) -> bool:
        """Whether every fal request needs a user's key (the server's own is never used)."""
        return self.mode != "server"

    async def key_for(self, principal: Principal, headers: Mapping[str, str] | None) -> FalKey | None:
        """The fal key of a request by `principal` with these HTTP `headers` (None: not over HTTP).
        None means the server's own key (server mode). KeyRefused when the mode needs a key and there
        is none: its message says what to do, never quoting what was sent."""
        if self.mode == "header":
            return key_from_header(headers)
        if self.file is not None:
            import anyio

            keys = await anyio.to_thread.run_sync(self.file.load)
            found = keys.get(principal.subject) if principal.subject is not None else None
            found = found or keys.get("*")
            if found is None:
                raise KeyRefused(missing_key_message(self.settings))
            return found
        return None

    async def key_or_none(self, principal: Principal, headers: Mapping[str, str] | None) -> FalKey | None:
        """`key_for`, with None where there is no key (for what can answer without one)."""
        try:
            return await self.key_for(principal, headers)
        except KeyRefused:
            return None


def key_from_header(headers: Mapping[str, str] | None) -> FalKey:
    raw = headers.get(HEADER.lower()) if headers is not None else None
    if raw is None or not raw.strip():
        raise KeyRefused(
            f"This server uses each user's own fal key: send yours in the {HEADER} header of every HTTP "
            "request (a key from https://fal.ai/dashboard/keys). Nothing was sent to fal."
        )
    value = raw.strip()
    if value[:4].lower() == "key ":  # pasted as fal's Authorization value
        value = value[4:].strip()
    if not _KEY_SHAPE.fullmatch(value):
        raise KeyRefused(
            f"The {HEADER} header is not a fal key (expected 8-512 visible characters, as "
            "https://fal.ai/dashboard/keys gives them). Nothing was sent to fal."
        )
    return FalKey.of(value)


def request_headers(ctx: Any) -> Mapping[str, str] | None:
    """The HTTP headers of the request a handler serves (None over stdio or in-process)."""
    return getattr(getattr(ctx, "request", None), "headers", None)


# -- the gateway's clients, one per key -----------------------------------------------------------------


@dataclass
class _Pooled:
    key: FalKey
    client: Any
    leases: int = 0


class ClientPool:
    """fal clients by key digest, at most CLIENTS_KEPT of them idle: the least recently used idle client
    is closed when a new key needs room. A client in use (leased) is never closed; were all of them in
    use, the pool holds more for a while, and closes the surplus as their calls end."""

    def __init__(
        self, make: Callable[[str], Any], close: Callable[[Any], Awaitable[None]], limit: int | None = None
    ) -> None:
        self._make, self._close, self._limit = make, close, limit
        self._clients: OrderedDict[str, _Pooled] = OrderedDict()
        self.made = 0  # clients made, for tests
        self.closed = 0  # clients closed

    @property
    def limit(self) -> int:
        return self._limit if self._limit is not None else CLIENTS_KEPT

    def __len__(self) -> int:
        return len(self._clients)

    def digests(self) -> list[str]:
        return list(self._clients)

    def acquire(self, key: FalKey) -> Any:
        """The client of `key`, leased until `release(key)`."""
        pooled = self._clients.get(key.digest)
        if pooled is None:
            pooled = self._clients[key.digest] = _Pooled(key, self._make(key.value))
            self.made += 1
        else:
            self._clients.move_to_end(key.digest)
        pooled.leases += 1
        return pooled.client

    async def release(self, key: FalKey) -> None:
        pooled = self._clients.get(key.digest)
        if pooled is not None:
            pooled.leases -= 1
        await self.trim()

    async def trim(self) -> None:
        """Close the least recently used idle clients beyond the limit."""
        import anyio

        surplus = len(self._clients) - self.limit
        if surplus <= 0:
            return
        idle = [digest for digest, pooled in self._clients.items() if pooled.leases <= 0][:surplus]
        closing = [self._clients.pop(digest).client for digest in idle]
        with anyio.CancelScope(shield=True):
            for client in closing:
                try:
                    await self._close(client)
                except Exception as exc:  # closing is best effort: the client is dropped anyway
                    log.debug("closing a pooled fal client failed: %s", type(exc).__name__)
                self.closed += 1

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for pooled in clients:
            await self._close(pooled.client)
            self.closed += 1
