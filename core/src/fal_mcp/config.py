"""Settings, read from the environment in one place.

Every variable is listed in the README. A malformed value stops the server
with a message naming the variable, rather than running with a guess.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_URLS = {
    "run": "https://fal.run",
    "queue": "https://queue.fal.run",
    "rest": "https://rest.fal.ai",
    "cdn": "https://v3.fal.media",
    "platform": "https://api.fal.ai/v1",
    # fal's webhook signing keys (webhooks.py), FAL_MCP_WEBHOOK_JWKS_URL
    "webhook_jwks": "https://rest.alpha.fal.ai/.well-known/jwks.json",
}
DEFAULT_TIMEOUT = 300.0
# Long-running categories get more time unless FAL_MCP_TIMEOUT_<CATEGORY> says otherwise.
CATEGORY_TIMEOUTS = {"video": 600.0}


class ConfigError(ValueError):
    pass


def number_setting(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    """The number in `env[name]` (else `default`); ConfigError naming the variable if it is not a finite
    number of at least `minimum`."""
    import math

    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} is not a finite number")
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def _optional_number(env: Mapping[str, str], name: str) -> float | None:
    """A number of at least 0 if the variable is set, else None (the limit is off)."""
    return number_setting(env, name, 0, 0) if env.get(name, "").strip() else None


def _names(env: Mapping[str, str], name: str) -> frozenset[str] | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} must be 1 or 0")


def _url(env: Mapping[str, str], kind: str) -> str:
    name = f"FAL_MCP_{kind.upper()}_URL"
    value = env.get(name, "").strip() or DEFAULT_URLS[kind]
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name}={value!r} must start with http:// or https://")
    return value.rstrip("/")


@dataclass(frozen=True)
class Settings:
    urls: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_URLS))
    timeout: float = DEFAULT_TIMEOUT
    category_timeouts: Mapping[str, float] = field(default_factory=lambda: dict(CATEGORY_TIMEOUTS))
    # Status polls per second are bounded by this; 0.1 s answers within ~100 ms of completion.
    poll_interval: float = 0.1
    max_retries: int = 3
    # Upper bound on a server-requested Retry-After wait, so a call cannot stall for minutes.
    max_retry_after: float = 30.0
    strict_plugins: bool = False
    plugins_allowed: frozenset[str] | None = None
    plugins_blocked: frozenset[str] = frozenset()
    # Only these tools are served (by name); None: every tool of the loaded packs.
    tools_allowed: frozenset[str] | None = None
    fal_key: str | None = field(default=None, repr=False)
    # Whose fal key pays for a call (fal_keys.py): "server" (fal_key, for everyone), "header" (each
    # user's own, in the X-Fal-Key header of their HTTP requests), "file" (by OAuth subject, keys_file).
    key_mode: str = "server"
    keys_file: str | None = None
    # Local files tools may read: the client's MCP roots if it declares them, else these.
    allowed_dirs: tuple[str, ...] = ()
    allow_hidden: bool = False
    max_upload_bytes: int = 100 * 1024 * 1024
    # Media out: inline image previews, and a directory every output file is saved to.
    inline_previews: bool = True
    # Budget guard: estimate every model call first and refuse one that would cost more (USD).
    max_cost_per_call: float | None = None
    # Ask the user before a call estimated above this (USD); None: never ask (spending.py).
    confirm_above: float | None = None
    # How long a confirmation token stays valid, in seconds.
    confirm_ttl: float = 600.0
    # What each owner may spend per UTC day and per UTC month (USD); None: no limit (spending.py).
    budget_daily: float | None = None
    budget_monthly: float | None = None
    # How long fal's model catalogue and prices are cached, in seconds.
    catalog_ttl: float = 3600.0
    output_dir: str | None = None
    # The job store: sqlite:///path or redis://host:port/db; None: a file in the user's state directory.
    store_url: str | None = None
    # A call still running after this many seconds returns its job id (None: never, wait to the timeout).
    handoff_after: float | None = 45.0
    # Seconds between progress notifications while a call waits (clients reset their timeouts on them).
    heartbeat: float = 5.0
    # The longest check_job may wait for a job to finish, in seconds.
    check_wait_max: float = 50.0
    # Finished jobs are forgotten after this many seconds, and beyond this many per owner.
    job_retention: float = 30 * 24 * 3600.0
    jobs_per_owner: int = 500
    # Replicas sharing a job store: each one's lease lasts this long unless renewed (runner.py); every
    # replica looks for jobs whose follower's lease lapsed this often (seconds).
    lease_ttl: float = 10.0
    sweep_interval: float = 5.0
    # The key sealing the state a 2026-era client carries between the rounds of one call (replicas must
    # share it); None: derived from the fal key, or made at start when there is none.
    state_key: str | None = field(default=None, repr=False)
    # Where fal can reach this deployment (FAL_MCP_PUBLIC_URL): when set, jobs are submitted with a
    # webhook to <public_url>/fal/webhook and followed by it (webhook_jobs.py), holding no connection.
    public_url: str | None = None
    # A job followed by webhook: fal's status is asked every this many seconds (progress, and whether it
    # is done); once fal says it is done, its webhook is waited for this long before the result is fetched.
    webhook_check: float = 30.0
    webhook_grace: float = 30.0
    # Other secrets of this deployment (bearer token, key parts), kept out of every message and log.
    other_secrets: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        categories = dict(CATEGORY_TIMEOUTS)
        for name, raw in env.items():
            if name.startswith("FAL_MCP_TIMEOUT_") and raw.strip():
                categories[name.removeprefix("FAL_MCP_TIMEOUT_").lower()] = number_setting(env, name, 0, 1)
        return cls(
            urls={kind: _url(env, kind) for kind in DEFAULT_URLS},
            timeout=number_setting(env, "FAL_MCP_TIMEOUT", DEFAULT_TIMEOUT, 1),
            category_timeouts=categories,
            poll_interval=number_setting(env, "FAL_MCP_POLL_INTERVAL", 0.1, 0.01),
            max_retries=int(number_setting(env, "FAL_MCP_MAX_RETRIES", 3, 0)),
            max_retry_after=number_setting(env, "FAL_MCP_MAX_RETRY_AFTER", 30.0, 0),
            strict_plugins=_flag(env, "FAL_MCP_STRICT_PLUGINS"),
            plugins_allowed=_names(env, "FAL_MCP_PLUGINS"),
            plugins_blocked=_names(env, "FAL_MCP_DISABLE_PLUGINS") or frozenset(),
            tools_allowed=_names(env, "FAL_MCP_TOOLS"),
            fal_key=_fal_key(env),
            key_mode=_key_mode(env),
            keys_file=_keys_file(env),
            allowed_dirs=_paths(env, "FAL_MCP_ALLOWED_DIRS"),
            allow_hidden=_flag(env, "FAL_MCP_ALLOW_HIDDEN"),
            max_upload_bytes=int(number_setting(env, "FAL_MCP_MAX_UPLOAD_MB", 100, 0.001) * 1024 * 1024),
            inline_previews=_flag(env, "FAL_MCP_INLINE_PREVIEWS", True),
            max_cost_per_call=_optional_number(env, "FAL_MCP_MAX_COST_PER_CALL"),
            confirm_above=_optional_number(env, "FAL_MCP_CONFIRM_ABOVE"),
            confirm_ttl=number_setting(env, "FAL_MCP_CONFIRM_TTL", 600.0, 0),
            budget_daily=_optional_number(env, "FAL_MCP_BUDGET_DAILY"),
            budget_monthly=_optional_number(env, "FAL_MCP_BUDGET_MONTHLY"),
            catalog_ttl=number_setting(env, "FAL_MCP_CATALOG_TTL", 3600.0, 0),
            output_dir=_output_dir(env),
            store_url=env.get("FAL_MCP_STORE", "").strip() or None,
            handoff_after=_handoff(env),
            heartbeat=number_setting(env, "FAL_MCP_HEARTBEAT", 5.0, 0.05),
            check_wait_max=number_setting(env, "FAL_MCP_CHECK_WAIT_MAX", 50.0, 0),
            job_retention=number_setting(env, "FAL_MCP_JOB_RETENTION_DAYS", 30, 0.0001) * 24 * 3600,
            jobs_per_owner=int(number_setting(env, "FAL_MCP_JOBS_PER_OWNER", 500, 1)),
            lease_ttl=number_setting(env, "FAL_MCP_LEASE_TTL", 10.0, 0.3),
            sweep_interval=number_setting(env, "FAL_MCP_SWEEP_INTERVAL", 5.0, 0.05),
            state_key=env.get("FAL_MCP_STATE_KEY", "").strip() or None,
            public_url=_public_url(env),
            webhook_check=number_setting(env, "FAL_MCP_WEBHOOK_CHECK_INTERVAL", 30.0, 0.05),
            webhook_grace=number_setting(env, "FAL_MCP_WEBHOOK_GRACE", 30.0, 0),
            other_secrets=tuple(env[name].strip() for name in SECRET_VARIABLES if env.get(name, "").strip()),
        )

    def secrets(self) -> tuple[str, ...]:
        """Every secret this server holds: never in a result, an error or a log line."""
        return tuple(s for s in (self.fal_key, *self.other_secrets) if s)

    def timeout_for(self, category: str) -> float:
        return self.category_timeouts.get(category, self.timeout)

    @property
    def webhook_url(self) -> str | None:
        """Where fal POSTs the outcome of the jobs this deployment submits; None: no webhooks."""
        return f"{self.public_url}/fal/webhook" if self.public_url else None


def _paths(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name, "")
    paths = tuple(os.path.realpath(os.path.expanduser(p)) for p in raw.split(os.pathsep) if p.strip())
    for path in paths:
        if not os.path.isdir(path):
            raise ConfigError(f"{name}: {path!r} is not a directory")
        if any(path == tree or path.startswith(tree + "/") for tree in ("/proc", "/sys", "/dev")):
            raise ConfigError(f"{name}: {path!r} is a system tree; files there are never read")
    return paths


def _output_dir(env: Mapping[str, str]) -> str | None:
    raw = env.get("FAL_MCP_OUTPUT_DIR", "").strip()
    if not raw:
        return None
    path = os.path.realpath(os.path.expanduser(raw))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"FAL_MCP_OUTPUT_DIR={raw!r} cannot be created: {exc.strerror}") from None
    return path


def _key_mode(env: Mapping[str, str]) -> str:
    mode = env.get("FAL_MCP_KEY_MODE", "").strip().lower() or "server"
    if mode not in ("server", "header", "file"):
        raise ConfigError(f"FAL_MCP_KEY_MODE={mode!r} must be server, header or file")
    if mode == "file" and not env.get("FAL_MCP_KEYS_FILE", "").strip():
        raise ConfigError(
            "FAL_MCP_KEY_MODE=file needs FAL_MCP_KEYS_FILE: the JSON file mapping subjects to fal keys"
        )
    return mode


def _keys_file(env: Mapping[str, str]) -> str | None:
    raw = env.get("FAL_MCP_KEYS_FILE", "").strip()
    # not resolved: a rotation may swap a link on its path (as Kubernetes secret volumes do)
    return os.path.abspath(os.path.expanduser(raw)) if raw else None


def _public_url(env: Mapping[str, str]) -> str | None:
    """FAL_MCP_PUBLIC_URL (url_setting's rules), kept without a trailing slash."""
    raw = env.get("FAL_MCP_PUBLIC_URL", "").strip()
    return url_setting("FAL_MCP_PUBLIC_URL", raw).rstrip("/") if raw else None


def url_setting(name: str, value: str) -> str:
    """`value` as a setting naming a URL (our public address, an OAuth issuer or resource, a JWKS): an
    absolute https URL (plain http only on a loopback host, for tests and a local sandbox) without
    credentials, query or fragment. Raises ConfigError."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (raises ValueError on a malformed port)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(f"{name}={value!r} must be an absolute https:// URL")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme == "http" and not loopback:
        raise ConfigError(f"{name}={value!r} must use https:// (plain http only on 127.0.0.1 or localhost)")
    if parts.query or parts.fragment or "#" in value:
        raise ConfigError(f"{name}={value!r} must have no query string or fragment")
    if parts.username or parts.password:
        raise ConfigError(f"{name}={value!r} must not carry credentials")
    return value


def _handoff(env: Mapping[str, str]) -> float | None:
    if env.get("FAL_MCP_HANDOFF_AFTER", "").strip().lower() == "off":
        return None
    return number_setting(env, "FAL_MCP_HANDOFF_AFTER", 45.0, 0)


def state_dir(env: Mapping[str, str] | None = None) -> str:
    """Where the server keeps its state (the job store): FAL_MCP_STATE_DIR, else the XDG state home."""
    env = os.environ if env is None else env
    explicit = env.get("FAL_MCP_STATE_DIR", "").strip()
    if explicit:
        return os.path.expanduser(explicit)
    base = env.get("XDG_STATE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "fal-mcp")


SECRET_VARIABLES = ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "FAL_MCP_AUTH_TOKEN", "FAL_MCP_STATE_KEY")


def _fal_key(env: Mapping[str, str]) -> str | None:
    if env.get("FAL_KEY", "").strip():
        return env["FAL_KEY"].strip()
    key_id, secret = env.get("FAL_KEY_ID", "").strip(), env.get("FAL_KEY_SECRET", "").strip()
    if key_id and secret:
        return f"{key_id}:{secret}"
    return None
