"""The sandbox's HTTP app: fal's queue, run, storage (CDN) and platform protocols, plus
the /_sandbox control routes. The endpoints it serves are `state.endpoints`.

A plain ASGI callable with a small route table: every request is classified first
(route name, endpoint id) so it can be recorded and matched against fault rules
before any handler runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import mimetypes
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from . import generate, platform, validation
from .endpoints import Endpoint, openapi_document
from .state import Job, SandboxState, file_url, key_digest
from .webhooks import Webhooks

STREAM_CHECK = 0.02  # how often a status stream looks for a change in its job

log = logging.getLogger("fal_mcp_sandbox")

TOKEN_SECONDS = 3600


class ConnectionReset(Exception):
    """Raised after a deliberately truncated response: the server then drops the connection."""


@dataclass
class Call:
    request: Request
    body: bytes
    record: dict  # this request's entry in state.requests (a throwaway dict for control routes)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    pattern: re.Pattern
    name: str  # route name used in records and fault rules; "control" is neither
    auth: str | None  # "key" | "bearer" | None
    handler: Callable[..., Awaitable[Response]]


def detail(status: int, message: Any, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": message, **extra}, status_code=status)


def _failure(status: int, body: dict, message: str, error_type: str) -> dict:
    """A job failure: what the result route answers and what status reports."""
    return {"status": status, "body": body, "message": message, "error_type": error_type}


def _validation_failure(errors: list[dict], error_type: str = "validation_error") -> dict:
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"][1:]) or "body"
    return _failure(422, {"detail": errors}, f"{where}: {first['msg']}", error_type)


def _default_message(status: int) -> str:
    if status == 429:
        return "Rate limit exceeded, retry later"
    try:
        return HTTPStatus(status).phrase
    except ValueError:  # codes without a standard phrase, e.g. 499
        return "Error"


def _json_or_none(body: bytes) -> Any:
    if not body or len(body) > 1_000_000 or body[:1] not in b"{[":
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _clean_file_name(name: str | None, content_type: str) -> str:
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name:
        name = "file" + (mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin")
    return name


def _log_lines(count: int) -> list[str]:
    if count <= 0:
        return []
    return ["Loading model"] + [f"Generating: step {i}/{count - 1}" for i in range(1, count)]


class SandboxApp:
    def __init__(self, state: SandboxState):
        self.state = state
        self._tasks: dict[str, asyncio.Task] = {}  # request id -> running job
        self._thumbnails: dict[str, bytes] = {}
        self.webhooks = Webhooks(state)  # signed webhooks of jobs submitted with ?fal_webhook=
        app = r"(?P<app>[^/]+/[^/]+)/requests/(?P<request_id>[^/]+)"
        endpoint = r"(?P<endpoint_id>[^/]+/[^/]+(?:/[^/]+)*)"
        cdn_file = r"/cdn/files/(?P<key>[^/]+)/(?P<name>[^/]+)"
        table = [
            ("GET", r"/_sandbox/health", "control", None, self.health),
            (
                "GET",
                r"/_sandbox/(?P<what>requests|submissions|cancels|faults|config|jobs|held)",
                "control",
                None,
                self.control_get,
            ),
            ("POST", r"/_sandbox/faults", "control", None, self.control_faults),
            ("POST", r"/_sandbox/config", "control", None, self.control_config),
            ("POST", r"/_sandbox/reset", "control", None, self.control_reset),
            ("POST", r"/_sandbox/release", "control", None, self.control_release),
            ("GET", r"/_sandbox/webhooks", "control", None, self.webhooks.control_get),
            (
                "POST",
                r"/_sandbox/webhooks/(?P<action>rotate|release|config)",
                "control",
                None,
                self.webhooks.control_post,
            ),
            ("GET", r"/\.well-known/jwks\.json", "jwks", None, self.webhooks.jwks),
            ("GET", rf"/queue/{app}/status", "status", "key", self.status),
            # Following a job by stream counts as the "status" route too, for records and faults.
            ("GET", rf"/queue/{app}/status/stream", "status", "key", self.status_stream),
            ("PUT", rf"/queue/{app}/cancel", "cancel", "key", self.cancel),
            ("GET", rf"/queue/{app}", "result", "key", self.result),
            ("POST", rf"/queue/{endpoint}", "submit", "key", self.submit),
            ("POST", rf"/run/{endpoint}", "run", "key", self.run),
            ("POST", r"/rest/storage/auth/token", "token", "key", self.token),
            ("POST", r"/rest/storage/upload/initiate", "upload", "key", self.initiate_upload),
            (
                "PUT",
                r"/cdn/storage-upload/(?P<key>[^/]+)/(?P<signature>[^/]+)",
                "upload",
                None,
                self.signed_upload,
            ),
            ("POST", r"/cdn/files/upload", "upload", "bearer", self.upload),
            ("POST", r"/cdn/files/upload/multipart", "multipart", "bearer", self.multipart_create),
            (
                "PUT",
                rf"{cdn_file}/multipart/(?P<upload_id>[^/]+)/(?P<part>\d+)",
                "multipart",
                "bearer",
                self.multipart_part,
            ),
            (
                "POST",
                rf"{cdn_file}/multipart/(?P<upload_id>[^/]+)/complete",
                "multipart",
                "bearer",
                self.multipart_complete,
            ),
            ("GET,HEAD", cdn_file, "download", None, self.download),
            ("GET,HEAD", r"/cdn/thumbnails/(?P<endpoint_id>.+)\.jpg", "download", None, self.thumbnail),
            ("GET", r"/platform/v1/models", "platform", "key", self.platform_models),
            ("GET", r"/platform/v1/models/pricing", "platform", "key", self.platform_pricing),
            ("POST", r"/platform/v1/models/pricing/estimate", "platform", "key", self.platform_estimate),
            ("GET", r"/platform/v1/models/usage", "platform", "key", self.platform_usage),
            ("GET", r"/openapi/queue/openapi\.json", "openapi", None, self.openapi),
        ]
        self.routes = [
            Route(tuple(methods.split(",")), re.compile(pattern), name, auth, handler)
            for methods, pattern, name, auth, handler in table
        ]

    @property
    def base_url(self) -> str:
        return self.state.base_url

    def shutdown(self) -> None:
        """Cancels running jobs (their waiters get a 'sandbox stopped' failure)."""
        for task in list(self._tasks.values()):
            task.cancel()
        self.webhooks.shutdown()

    # --- ASGI entry point ---------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        method, path = scope["method"], scope["path"]
        route, params = self._match(method, path)

        async def send_with_id(message: dict) -> None:
            # Every response carries x-fal-request-id; handlers may set their own.
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-fal-request-id" for k, _ in headers):
                    headers.append((b"x-fal-request-id", str(uuid.uuid4()).encode()))
                message = {**message, "headers": headers}
            await send(message)

        if isinstance(route, Response):  # 404 / 405
            await route(scope, receive, send_with_id)
            return
        request = Request(scope)
        record: dict = {}
        if route.name != "control":  # control routes are neither recorded nor faulted
            endpoint_id, request_id = self._classify(route, params, request)
            record = self.state.record(
                method=method,
                path=path,
                route=route.name,
                endpoint_id=endpoint_id,
                request_id=request_id,
                json=_json_or_none(bytes(body)),
                key=self._key_of(route, request),
            )
            fault = self.state.take_fault(route.name, endpoint_id)
            if fault and await self._apply_fault(fault, route, record, scope, receive, send, send_with_id):
                return
        try:
            response = self._authorize(route, request)
            if response is None:
                response = await route.handler(Call(request, bytes(body), record), **params)
        except platform.PlatformError as exc:
            response = exc.response()
        except Exception:
            log.exception("sandbox handler failed: %s %s", method, path)
            response = detail(500, "Internal sandbox error")
        record["status"] = response.status_code
        await response(scope, receive, send_with_id)

    def _match(self, method: str, path: str) -> tuple[Route | Response, dict]:
        allowed = False
        for route in self.routes:
            m = route.pattern.fullmatch(path)
            if m:
                if method in route.methods:
                    return route, m.groupdict()
                allowed = True
        if allowed:
            return detail(405, "Method Not Allowed"), {}
        return detail(404, "Not Found"), {}

    def _classify(self, route: Route, params: dict, request: Request) -> tuple[str | None, str | None]:
        """(endpoint id, request id) of a request, for records and fault matching."""
        request_id = params.get("request_id")
        if request_id:
            job = self.state.jobs.get(request_id)
            return (job.endpoint_id if job else params["app"]), request_id
        if "endpoint_id" in params:
            return params["endpoint_id"], None
        if route.name in ("platform", "openapi"):
            return request.query_params.get("endpoint_id"), None
        return None, None

    async def _apply_fault(
        self,
        fault: dict,
        route: Route,
        record: dict,
        scope: dict,
        receive: Callable,
        send: Callable,
        send_with_id: Callable,
    ) -> bool:
        """Applies a fault rule; True when it answered the request itself."""
        if fault.get("delay"):
            await asyncio.sleep(float(fault["delay"]))
        if fault.get("reset"):
            # Promise more bytes than we send, then drop the connection: a transport error.
            record["status"] = "reset"
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
                }
            )
            await send_with_id({"type": "http.response.body", "body": b'{"status": "IN_', "more_body": True})
            raise ConnectionReset("sandbox fault: connection reset")
        if "status" not in fault:
            return False  # a pure delay: carry on normally
        status = int(fault["status"])
        record["status"] = status
        if fault.get("ingress"):
            # Looks like fal's ingress (nginx, no x-fal-request-id): fal_client retries 502-504 of these.
            html = f"<html><head><title>{status}</title></head><body><center>nginx</center></body></html>"
            await Response(html, status, media_type="text/html")(scope, receive, send)
            return True
        message = fault.get("message") or _default_message(status)
        headers = {}
        if status == 429 or "retry_after" in fault:
            retry_after = float(fault.get("retry_after", 1))
            headers["Retry-After"] = f"{retry_after:g}"
        if route.name == "platform":
            kinds = {
                401: "authorization_error",
                403: "authorization_error",
                404: "not_found",
                429: "rate_limited",
            }
            kind = kinds.get(status, "server_error" if status >= 500 else "validation_error")
            response = platform.error(status, kind, message)
            response.headers.update(headers)
        else:
            response = JSONResponse({"detail": message}, status_code=status, headers=headers)
        await response(scope, receive, send_with_id)
        return True

    def _key_of(self, route: Route, request: Request) -> str | None:
        """The digest of the fal key a request carried: its own (`Authorization: Key ...`), or for the CDN,
        the key its bearer token was issued to."""
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        credential = credential.strip()
        if not credential:
            return None
        if route.auth == "key" and scheme.lower() == "key":
            return key_digest(credential)
        if route.auth == "bearer" and scheme.lower() == "bearer":
            return self.state.token_keys.get(credential)
        return None

    def _authorize(self, route: Route, request: Request) -> Response | None:
        if route.auth is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if route.auth == "key":
            accepted = self.state.accepted_keys
            if (
                scheme.lower() == "key"
                and credential
                and (accepted is None or key_digest(credential) in accepted)
            ):
                return None
            if scheme.lower() == "key" and credential:
                message = "Invalid API key"
                if route.name == "platform":
                    return platform.error(401, "authorization_error", message)
                return detail(401, message)
            message = "Missing authorization header" if not header else "Invalid authorization header"
            if route.name == "platform":
                return platform.error(401, "authorization_error", message)
            return detail(401, message)
        if scheme.lower() == "bearer" and self.state.tokens.get(credential, 0) > time.time():
            return None
        return detail(401, "Missing authorization header" if not header else "Invalid or expired token")

    # --- queue and run ------------------------------------------------------------------

    def _urls(self, job: Job) -> dict:
        base = f"{self.base_url}/queue/{job.app}/requests/{job.request_id}"
        return {"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}

    def _job(self, app: str, request_id: str) -> Job | None:
        job = self.state.jobs.get(request_id)
        return job if job is not None and job.app == app else None

    @staticmethod
    def _input(call: Call) -> tuple[dict | None, Response | None]:
        try:
            body = call.json()
        except ValueError:
            return None, detail(422, [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}])
        if not isinstance(body, dict):
            return None, detail(
                422,
                [
                    {
                        "loc": ["body"],
                        "msg": "Input should be a valid dictionary",
                        "type": "dict_type",
                        "input": body,
                    }
                ],
            )
        return body, None

    def _start_job(self, endpoint: Endpoint, body: dict, mode: str) -> tuple[Job, asyncio.Task]:
        args, errors = validation.validate(endpoint, body)
        rule = self.state.take_outcome(endpoint.id) or {}
        config = self.state.config
        default_ahead = config.queue_ahead if mode == "queue" else 0
        queue_ahead = int(rule.get("queue_ahead", default_ahead))
        job = Job(
            str(uuid.uuid4()), endpoint.id, endpoint.app, body, mode, queue_position=max(0, queue_ahead - 1)
        )
        if queue_ahead == 0:
            job.status, job.started_at = "IN_PROGRESS", time.time()
        self.state.add_job(job)
        task = asyncio.create_task(self._run_job(job, endpoint, args, errors, rule, queue_ahead))
        self._tasks[job.request_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.request_id, None))
        return job, task

    async def _run_job(
        self, job: Job, endpoint: Endpoint, args: dict, errors: list, rule: dict, queue_ahead: int
    ) -> None:
        config = self.state.config
        job_seconds = float(rule.get("job_seconds", config.job_seconds))
        outcome = rule.get("outcome", "ok")
        try:
            for position in range(queue_ahead - 1, -1, -1):
                job.queue_position = position
                if rule.get("hold_queue"):  # at each position until the test calls state.release()
                    released = self.state.hold(job.request_id)
                    while not released.is_set():
                        await asyncio.sleep(0.02)
                else:
                    await asyncio.sleep(config.queue_step)
            if job.status == "IN_QUEUE":
                job.status, job.started_at = "IN_PROGRESS", time.time()
            if errors:  # like fal: accepted by the queue, rejected by the model's input validation
                job.complete(error=_validation_failure(errors))
                return
            lines = _log_lines(config.log_lines)
            if outcome == "never_finish":
                job.log(lines[0] if lines else "Loading model")
                await asyncio.Event().wait()  # until cancelled
            if outcome == "hold":  # running until the test calls state.release()
                job.log(lines[0] if lines else "Loading model")
                released = self.state.hold(job.request_id)
                while not released.is_set():
                    await asyncio.sleep(0.02)
            for line in lines:
                job.log(line)
                await asyncio.sleep(job_seconds / len(lines))
            if not lines:
                await asyncio.sleep(job_seconds)
            if outcome == "model_error":
                job.complete(error=self._model_failure(rule))
                return
            result, usage = await asyncio.to_thread(generate.run, endpoint, args, self._context())
            job.complete(result, usage)
        except generate.InputError as exc:
            job.complete(error=_validation_failure(exc.errors, exc.errors[0]["type"]))
        except asyncio.CancelledError:
            stopped = "Sandbox stopped"
            job.complete(error=_failure(503, {"detail": stopped}, stopped, "internal_error"))
            raise
        except Exception as exc:
            log.exception("sandbox job %s failed", job.request_id)
            job.complete(
                error=_failure(
                    500,
                    {"detail": f"Internal error: {exc}", "error_type": "internal_server_error"},
                    f"Internal error: {exc}",
                    "internal_server_error",
                )
            )

    @staticmethod
    def _model_failure(rule: dict) -> dict:
        message = rule.get("message") or "Model inference failed"
        error_type = rule.get("error_type") or "internal_server_error"
        status = int(rule.get("status", 500))
        if status == 422:  # fal reports input-related model errors as a detail list
            body = {"detail": [{"loc": ["body"], "msg": message, "type": error_type}]}
        else:
            body = {"detail": message, "error_type": error_type}
        return _failure(status, body, message, error_type)

    def _status_body(self, job: Job, with_logs: bool) -> dict:
        body = {"status": job.status, "request_id": job.request_id, **self._urls(job)}
        if job.status == "IN_QUEUE":
            body["queue_position"] = job.queue_position
        body["logs"] = list(job.logs) if with_logs and job.status != "IN_QUEUE" else None
        if job.finished:
            body["metrics"] = {"inference_time": round(job.completed_at - job.started_at, 3)}
            if job.error:
                body["error"], body["error_type"] = job.error["message"], job.error["error_type"]
        return body

    def _result_response(self, job: Job) -> Response:
        headers = {"x-fal-request-id": job.request_id}
        if not job.finished:
            return detail(400, "Request is still in progress")
        if job.error:
            headers["x-fal-error-type"] = job.error["error_type"]
            return JSONResponse(job.error["body"], status_code=job.error["status"], headers=headers)
        return JSONResponse(job.result, headers=headers)

    def _accept(self, call: Call, endpoint_id: str, mode: str):
        """A job started for this request, as (job, task); or the Response refusing it."""
        endpoint = self.state.endpoints.get(endpoint_id)
        if endpoint is None:
            return detail(404, f"Application '{endpoint_id}' not found")
        body, problem = self._input(call)
        if problem:
            return problem
        job, task = self._start_job(endpoint, body, mode)
        call.record["request_id"] = job.request_id
        return job, task

    async def submit(self, call: Call, endpoint_id: str) -> Response:
        accepted = self._accept(call, endpoint_id, "queue")
        if isinstance(accepted, Response):
            return accepted
        job, task = accepted
        self.webhooks.follow(job, task, call.request.query_params.get("fal_webhook"))
        return JSONResponse(
            {
                "status": "IN_QUEUE",
                "request_id": job.request_id,
                **self._urls(job),
                "queue_position": job.queue_position,
            },
            headers={"x-fal-request-id": job.request_id},
        )

    async def status(self, call: Call, app: str, request_id: str) -> Response:
        job = self._job(app, request_id)
        if job is None:
            return detail(404, f"Request '{request_id}' not found")
        with_logs = call.request.query_params.get("logs", "0").lower() in ("1", "true", "yes")
        return JSONResponse(self._status_body(job, with_logs), headers={"x-fal-request-id": request_id})

    async def status_stream(self, call: Call, app: str, request_id: str) -> Response:
        """fal's status stream: a server-sent event with the status object at every change, a comment
        line every 15 s to keep the connection open, and the end of the stream after COMPLETED."""
        job = self._job(app, request_id)
        if job is None:
            return detail(404, f"Request '{request_id}' not found")
        with_logs = call.request.query_params.get("logs", "0").lower() in ("1", "true", "yes")

        async def events():
            seen, quiet = None, 0.0
            while True:
                state = (job.status, job.queue_position, len(job.logs))
                if state != seen:
                    seen, quiet = state, 0.0
                    yield f"data: {json.dumps(self._status_body(job, with_logs))}\n\n"
                if job.finished:
                    return
                await asyncio.sleep(STREAM_CHECK)
                quiet += STREAM_CHECK
                if quiet >= 15:
                    quiet = 0.0
                    yield ": keep-alive\n\n"

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"x-fal-request-id": request_id, "cache-control": "no-cache"},
        )

    async def result(self, call: Call, app: str, request_id: str) -> Response:
        job = self._job(app, request_id)
        if job is None:
            return detail(404, f"Request '{request_id}' not found")
        return self._result_response(job)

    async def cancel(self, call: Call, app: str, request_id: str) -> Response:
        self.state.add_cancel(request_id)
        job = self._job(app, request_id)
        if job is None:
            return detail(404, f"Request '{request_id}' not found")
        if job.finished:
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        job.cancelled = True
        message, error_type = "Request was cancelled", "client_cancelled"
        job.complete(error=_failure(400, {"detail": message, "error_type": error_type}, message, error_type))
        task = self._tasks.get(request_id)
        if task:
            task.cancel()
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    async def run(self, call: Call, endpoint_id: str) -> Response:
        accepted = self._accept(call, endpoint_id, "run")
        if isinstance(accepted, Response):
            return accepted
        job, task = accepted
        await asyncio.wait({task})
        return self._result_response(job)

    # --- storage ------------------------------------------------------------------------

    def _context(self) -> generate.Context:
        return generate.Context(read_local=self._read_local, store=self._store)

    def _read_local(self, url: str) -> bytes | None:
        """Bytes of a file on this sandbox's CDN, read straight from storage."""
        parts, ours = urlsplit(url), urlsplit(self.base_url)
        if parts.port != ours.port or parts.hostname not in (ours.hostname, "localhost", "127.0.0.1", "::1"):
            return None
        m = re.fullmatch(r"/cdn/files/([^/]+)/([^/]+)", unquote(parts.path))
        stored = self.state.storage.get(m[1]) if m else None
        return stored.data if stored and stored.file_name == m[2] else None

    def _store(self, data: bytes, content_type: str, file_name: str) -> str:
        key = self.state.storage.put(data, content_type, file_name)
        return file_url(self.base_url, key, file_name)

    async def token(self, call: Call) -> Response:
        token = secrets.token_urlsafe(24)
        expires = time.time() + TOKEN_SECONDS
        with self.state.lock:
            self.state.tokens[token] = expires
            self.state.token_keys[token] = call.record.get("key")
        return JSONResponse(
            {
                "token": token,
                "token_type": "Bearer",
                "base_url": f"{self.base_url}/cdn",
                "expires_at": datetime.fromtimestamp(expires, timezone.utc).isoformat(),
            }
        )

    async def upload(self, call: Call) -> Response:
        content_type = call.request.headers.get("content-type", "application/octet-stream")
        name = _clean_file_name(call.request.headers.get("x-fal-file-name"), content_type)
        url = self._store(call.body, content_type, name)
        call.record["file_url"] = url
        return JSONResponse(
            {"access_url": url, "content_type": content_type, "file_name": name, "file_size": len(call.body)}
        )

    async def multipart_create(self, call: Call) -> Response:
        content_type = call.request.headers.get("content-type", "application/octet-stream")
        name = _clean_file_name(call.request.headers.get("x-fal-file-name"), content_type)
        key, upload_id = self.state.storage.new_key(), uuid.uuid4().hex
        with self.state.lock:
            self.state.uploads[upload_id] = {
                "key": key,
                "name": name,
                "content_type": content_type,
                "parts": {},
            }
        return JSONResponse({"access_url": file_url(self.base_url, key, name), "uploadId": upload_id})

    def _pending(self, upload_id: str, key: str, name: str) -> dict | None:
        pending = self.state.uploads.get(upload_id)
        if pending and "parts" in pending and pending["key"] == key and pending["name"] == name:
            return pending
        return None

    async def multipart_part(self, call: Call, key: str, name: str, upload_id: str, part: str) -> Response:
        pending = self._pending(upload_id, key, name)
        if pending is None:
            return detail(404, "Upload not found")
        etag = f'"{hashlib.md5(call.body).hexdigest()}"'
        pending["parts"][int(part)] = (etag, call.body)
        return Response(b"", headers={"ETag": etag})

    async def multipart_complete(self, call: Call, key: str, name: str, upload_id: str) -> Response:
        pending = self._pending(upload_id, key, name)
        if pending is None:
            return detail(404, "Upload not found")
        try:
            listed = {int(p["partNumber"]): p["etag"] for p in call.json()["parts"]}
        except (ValueError, KeyError, TypeError):
            return detail(400, 'Body must be {"parts": [{"partNumber": n, "etag": "..."}]}')
        uploaded = pending["parts"]
        if not listed or set(listed) != set(uploaded) or any(uploaded[n][0] != listed[n] for n in listed):
            return detail(400, "Parts do not match the uploaded parts")
        data = b"".join(uploaded[n][1] for n in sorted(uploaded))
        self.state.storage.put(data, pending["content_type"], name, key=key)
        with self.state.lock:
            self.state.uploads.pop(upload_id, None)
        return JSONResponse({"access_url": file_url(self.base_url, key, name)})

    async def initiate_upload(self, call: Call) -> Response:
        body, problem = self._input(call)
        if problem:
            return problem
        content_type = body.get("content_type") or "application/octet-stream"
        name = _clean_file_name(body.get("file_name"), content_type)
        key, signature = self.state.storage.new_key(), secrets.token_urlsafe(16)
        with self.state.lock:
            self.state.uploads[signature] = {"key": key, "name": name, "content_type": content_type}
        return JSONResponse(
            {
                "upload_url": f"{self.base_url}/cdn/storage-upload/{key}/{signature}",
                "file_url": file_url(self.base_url, key, name),
            }
        )

    async def signed_upload(self, call: Call, key: str, signature: str) -> Response:
        with self.state.lock:
            pending = self.state.uploads.get(signature)
            if not pending or pending.get("key") != key or "parts" in pending:
                return detail(403, "Invalid or expired upload URL")
            del self.state.uploads[signature]
        content_type = call.request.headers.get("content-type") or pending["content_type"]
        self.state.storage.put(call.body, content_type, pending["name"], key=key)
        return Response(b"")

    async def download(self, call: Call, key: str, name: str) -> Response:
        stored = self.state.storage.get(key)
        if stored is None or stored.file_name != name:
            return detail(404, "File not found")
        if call.request.method == "HEAD":
            return Response(
                b"", headers={"content-length": str(len(stored.data)), "content-type": stored.content_type}
            )
        return Response(stored.data, headers={"content-type": stored.content_type})

    async def thumbnail(self, call: Call, endpoint_id: str) -> Response:
        model = self.state.endpoints.get(endpoint_id)
        if model is None:
            return detail(404, "File not found")
        if endpoint_id not in self._thumbnails:

            def draw() -> bytes:
                from . import media

                img = media.draw_image(256, 256, model.display_name, 0)
                return media.encode_image(img, "jpeg")[0]

            self._thumbnails[endpoint_id] = await asyncio.to_thread(draw)
        data = self._thumbnails[endpoint_id]
        if call.request.method == "HEAD":
            return Response(b"", headers={"content-length": str(len(data)), "content-type": "image/jpeg"})
        return Response(data, media_type="image/jpeg")

    # --- platform -----------------------------------------------------------------------

    async def platform_models(self, call: Call) -> Response:
        return platform.models(self.state, call.request)

    async def platform_pricing(self, call: Call) -> Response:
        return platform.pricing(self.state, call.request)

    async def platform_estimate(self, call: Call) -> Response:
        try:
            body = call.json()
        except ValueError:
            return platform.error(400, "validation_error", "Body must be valid JSON")
        return platform.estimate(self.state, body)

    async def platform_usage(self, call: Call) -> Response:
        return platform.usage(self.state, call.request)

    async def openapi(self, call: Call) -> Response:
        endpoint = self.state.endpoints.get(call.request.query_params.get("endpoint_id", ""))
        document = openapi_document(endpoint, f"{self.base_url}/queue") if endpoint else None
        if document is None:
            return detail(404, "Endpoint not found")
        return JSONResponse(document)

    # --- control ------------------------------------------------------------------------

    async def health(self, call: Call) -> Response:
        return JSONResponse(
            {"status": "ok", "base_url": self.base_url, "endpoints": len(self.state.endpoints)}
        )

    async def control_get(self, call: Call, what: str) -> Response:
        return JSONResponse(self.state.snapshot(what))

    async def control_faults(self, call: Call) -> Response:
        try:
            body = call.json()
            rules = body if isinstance(body, list) else [body]
            added = [self.state.add_fault(**rule) for rule in rules]
        except (ValueError, TypeError) as exc:
            return detail(400, str(exc))
        return JSONResponse({"added": added, "faults": self.state.snapshot("faults")})

    async def control_config(self, call: Call) -> Response:
        try:
            config = self.state.set_config(**call.json())
        except (ValueError, TypeError) as exc:
            return detail(400, str(exc))
        return JSONResponse(asdict(config))

    async def control_release(self, call: Call) -> Response:
        """Held jobs (outcome "hold") finish: the one named by `request_id`, else every one held now."""
        try:
            body = call.json() if call.body.strip() else {}
        except ValueError as exc:
            return detail(400, str(exc))
        request_id = body.get("request_id") if isinstance(body, dict) else None
        return JSONResponse({"released": self.state.release(request_id)})

    async def control_reset(self, call: Call) -> Response:
        self.state.reset()
        return JSONResponse({"status": "ok"})
