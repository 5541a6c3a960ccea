"""Sandbox state: config, request records, fault rules, jobs, stored files and the endpoints served.

Shared between the server's event loop and test code in other threads, so
mutations take `state.lock`. Stdlib only.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

ROUTES = (
    "submit",
    "status",
    "result",
    "cancel",
    "run",
    "token",
    "upload",
    "download",
    "multipart",
    "platform",
    "openapi",
    "jwks",  # the webhook keys (webhooks.py)
)
OUTCOMES = ("ok", "model_error", "never_finish", "hold")
WEBHOOK_FAULTS = ("delay", "duplicate", "redeliver", "drop", "reorder", "bad_signature", "payload_error")
_WEBHOOK_RULE_KEYS = {"webhook", "endpoint", "times", "delay"}  # webhook faults (webhooks.py)
_REQUEST_RULE_KEYS = {
    "route",
    "endpoint",
    "status",
    "retry_after",
    "delay",
    "reset",
    "ingress",
    "times",
    "message",
}
_OUTCOME_RULE_KEYS = {
    "outcome",
    "endpoint",
    "message",
    "error_type",
    "status",
    "times",
    "queue_ahead",
    "job_seconds",
    "hold_queue",
}


def key_digest(key: str) -> str:
    """What the records keep of the fal key a request carried (`record["key"]`): a digest, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class Config:
    job_seconds: float = 0.3  # time a job spends IN_PROGRESS
    queue_ahead: int = 0  # queue positions a job waits through before running
    queue_step: float = 0.2  # seconds per queue position
    log_lines: int = 3  # log lines emitted while IN_PROGRESS
    usage_forbidden: bool = False  # platform usage answers 403 (a non-admin key)


@dataclass
class Job:
    request_id: str
    endpoint_id: str
    app: str  # owner/alias: the part of the endpoint id used in queue URLs
    input: dict
    mode: str  # "queue" | "run"
    created_at: float = field(default_factory=time.time)
    status: str = "IN_QUEUE"  # IN_QUEUE | IN_PROGRESS | COMPLETED
    queue_position: int = 0
    started_at: float | None = None
    completed_at: float | None = None
    logs: list = field(default_factory=list)
    result: dict | None = None
    # On failure: {"status": HTTP status of the result route, "body": its JSON, "message", "error_type"}
    error: dict | None = None
    usage: float = 0.0  # billable quantity in the endpoint's unit
    cancelled: bool = False

    @property
    def finished(self) -> bool:
        return self.status == "COMPLETED"

    def log(self, message: str) -> None:
        self.logs.append(
            {
                "message": message,
                "level": "INFO",
                "source": "user",
                "timestamp": datetime.now(timezone.utc).isoformat(),
            }
        )

    def complete(self, result: dict | None = None, usage: float = 0.0, error: dict | None = None) -> None:
        if self.finished:
            return
        self.result, self.usage, self.error = result, usage, error
        self.status, self.completed_at = "COMPLETED", time.time()
        self.started_at = self.started_at or self.completed_at

    def summary(self) -> dict:
        keys = (
            "request_id",
            "endpoint_id",
            "mode",
            "status",
            "queue_position",
            "created_at",
            "started_at",
            "completed_at",
            "usage",
            "cancelled",
        )
        error = self.error and {"message": self.error["message"], "error_type": self.error["error_type"]}
        return {**{k: getattr(self, k) for k in keys}, "error": error}


@dataclass
class StoredFile:
    data: bytes
    content_type: str
    file_name: str
    created_at: float = field(default_factory=time.time)


class Storage:
    """In-memory CDN: key -> file, oldest evicted beyond `max_bytes`."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._files: OrderedDict[str, StoredFile] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @staticmethod
    def new_key() -> str:
        return uuid.uuid4().hex[:16]

    def put(self, data: bytes, content_type: str, file_name: str, key: str | None = None) -> str:
        key = key or self.new_key()
        with self._lock:
            old = self._files.pop(key, None)
            self._size -= len(old.data) if old else 0
            self._files[key] = StoredFile(data, content_type, file_name)
            self._size += len(data)
            while self._size > self.max_bytes and len(self._files) > 1:
                _, evicted = self._files.popitem(last=False)
                self._size -= len(evicted.data)
        return key

    def get(self, key: str) -> StoredFile | None:
        with self._lock:
            return self._files.get(key)

    @property
    def total_bytes(self) -> int:
        return self._size


def file_url(base_url: str, key: str, file_name: str) -> str:
    return f"{base_url}/cdn/files/{key}/{quote(file_name)}"


class SandboxState:
    """Config, records and fault rules of one sandbox. `sb.state` in tests."""

    def __init__(self, **config: Any):
        self.lock = threading.RLock()
        self._initial = self._apply(Config(), config)  # what reset() restores
        self.config = replace(self._initial)
        self.requests: list[dict] = []
        self.submissions: list[dict] = []
        self.cancels: list[str] = []
        self.jobs: dict[str, Job] = {}
        self.faults: list[dict] = []
        self.storage = Storage()
        self.held: dict[str, threading.Event] = {}  # request id -> released, for jobs with outcome "hold"
        self.tokens: dict[str, float] = {}  # CDN bearer token -> expiry (epoch seconds)
        self.token_keys: dict[str, str | None] = {}  # CDN bearer token -> digest of the key it was issued to
        # Digests of the only fal keys accepted (accept_keys); None: any key, as by default
        self.accepted_keys: set[str] | None = None
        self.uploads: dict[str, dict] = {}  # pending multipart / signed uploads
        self.base_url = ""  # set when the server starts
        # endpoint id -> endpoints.Endpoint: what the sandbox serves (set when it starts; reset() keeps it)
        self.endpoints: dict[str, Any] = {}
        self.webhooks: Any = None  # webhooks.Webhooks: the signed webhooks it sends (set when it starts)

    # --- config -------------------------------------------------------------------------

    @staticmethod
    def _apply(config: Config, changes: dict) -> Config:
        types = {f.name: f.type for f in fields(Config)}
        values = {}
        for name, value in changes.items():
            if name not in types:
                raise ValueError(f"unknown config setting {name!r} (known: {', '.join(types)})")
            kind = {"float": float, "int": int, "bool": bool}[types[name]]
            if kind is bool and not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
            values[name] = kind(value)
            if kind is not bool and values[name] < 0:
                raise ValueError(f"{name} must not be negative")
        return replace(config, **values)

    def set_config(self, **changes: Any) -> Config:
        with self.lock:
            self.config = self._apply(self.config, changes)
            return self.config

    # --- faults -------------------------------------------------------------------------

    def add_fault(self, **rule: Any) -> dict:
        """Adds a request fault (route/status/delay/reset), a job outcome rule (outcome=...) or a webhook
        fault (webhook=..., see webhooks.py)."""
        if "webhook" in rule:
            unknown = set(rule) - _WEBHOOK_RULE_KEYS
            if rule["webhook"] not in WEBHOOK_FAULTS:
                raise ValueError(f"webhook must be one of {', '.join(WEBHOOK_FAULTS)}")
        elif "outcome" in rule:
            unknown = set(rule) - _OUTCOME_RULE_KEYS
            if rule["outcome"] not in OUTCOMES:
                raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
        else:
            unknown = set(rule) - _REQUEST_RULE_KEYS
            if rule.get("route", "*") not in (*ROUTES, "*"):
                raise ValueError(f"route must be '*' or one of {', '.join(ROUTES)}")
            if not any(k in rule for k in ("status", "delay", "reset")):
                raise ValueError("a fault needs status, delay or reset (or outcome for a job rule)")
            if "status" in rule and not 100 <= int(rule["status"]) <= 599:
                raise ValueError("status must be an HTTP status code")
        if unknown:
            raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
        times = int(rule.get("times", 1))
        if times == 0 or times < -1:
            raise ValueError("times must be positive, or -1 for forever")
        rule = {**rule, "times": times, "hits": 0}
        with self.lock:
            self.faults.append(rule)
        return rule

    def _take(self, match) -> dict | None:
        with self.lock:
            for rule in self.faults:
                if match(rule):
                    rule["hits"] += 1
                    if rule["times"] > 0:
                        rule["times"] -= 1
                        if rule["times"] == 0:
                            self.faults.remove(rule)
                    return dict(rule)
        return None

    @staticmethod
    def _endpoint_matches(rule: dict, endpoint_id: str | None) -> bool:
        prefix = rule.get("endpoint")
        return prefix is None or (endpoint_id is not None and endpoint_id.startswith(prefix))

    def take_fault(self, route: str, endpoint_id: str | None) -> dict | None:
        """The first request fault matching this request, consumed once."""
        return self._take(
            lambda r: (
                "outcome" not in r
                and "webhook" not in r
                and r.get("route", "*") in ("*", route)
                and self._endpoint_matches(r, endpoint_id)
            )
        )

    def accept_keys(self, *keys: str) -> None:
        """Accept only these fal keys from now on (another gets 401, as fal answers a wrong key); none
        given: any key again. reset() accepts any key again."""
        with self.lock:
            self.accepted_keys = {key_digest(key) for key in keys} if keys else None

    def take_outcome(self, endpoint_id: str) -> dict | None:
        """The first job outcome rule matching this endpoint, consumed at submit time."""
        return self._take(lambda r: "outcome" in r and self._endpoint_matches(r, endpoint_id))

    # --- records ------------------------------------------------------------------------

    def record(self, **entry: Any) -> dict:
        entry = {
            "time": time.time(),
            "method": None,
            "path": None,
            "route": None,
            "endpoint_id": None,
            "request_id": None,
            "json": None,
            "status": None,
            "key": None,  # key_digest of the fal key the request carried (through its CDN token for uploads)
            **entry,
        }
        with self.lock:
            self.requests.append(entry)
        return entry

    def add_job(self, job: Job) -> None:
        with self.lock:
            self.jobs[job.request_id] = job
            self.submissions.append(
                {
                    "request_id": job.request_id,
                    "endpoint_id": job.endpoint_id,
                    "input": job.input,
                    "mode": job.mode,
                    "time": job.created_at,
                }
            )

    def hold(self, request_id: str) -> threading.Event:
        """A job with the outcome "hold" runs until the test releases it (release())."""
        with self.lock:
            return self.held.setdefault(request_id, threading.Event())

    def release(self, request_id: str | None = None) -> int:
        """Let held jobs (one, or all) finish; returns how many were released."""
        with self.lock:
            events = (
                [self.held.pop(request_id)]
                if request_id in self.held
                else ([] if request_id is not None else [self.held.pop(key) for key in list(self.held)])
            )
        for event in events:
            event.set()
        return len(events)

    def add_cancel(self, request_id: str) -> None:
        with self.lock:
            self.cancels.append(request_id)

    def reset(self) -> None:
        """Clears records, jobs and faults and restores the config the sandbox started with.

        Stored files and CDN tokens survive, so URLs and clients from before stay valid.
        """
        with self.lock:
            self.requests.clear()
            self.submissions.clear()
            self.cancels.clear()
            self.jobs.clear()
            self.faults.clear()
            for event in self.held.values():
                event.set()
            self.held.clear()
            self.config = replace(self._initial)
            self.accepted_keys = None
        if self.webhooks is not None:
            self.webhooks.reset()

    def snapshot(self, what: str) -> Any:
        """JSON-ready copies for the HTTP control routes."""
        with self.lock:
            if what == "config":
                return asdict(self.config)
            if what == "jobs":
                return [job.summary() for job in self.jobs.values()]
            return [dict(x) if isinstance(x, dict) else x for x in getattr(self, what)]
