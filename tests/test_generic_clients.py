"""Generic MCP clients call every tool right: the MCP Inspector CLI (`--tool-arg key=value`, converted by
the tool's inputSchema) and the TypeScript SDK client (which checks each result's structuredContent
against the tool's outputSchema), each over stdio and over streamable HTTP, call every tool the server
lists, with the arguments of tests/clients/tool_calls.json.

Each run proves three things: every call succeeds (no isError, no client-side rejection of the result);
the arguments arrived typed (what the server received on the wire, read through a recording shim on
stdio or a recording proxy on HTTP, equals the table value for value and type for type); and the typed
values reached fal as such (the sandbox's recorded submissions).

The Node packages (tests/clients/package.json, pinned by its package-lock.json) are installed once with
`npm ci`. These tests skip only where node or npm is missing."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fal_mcp_sandbox.testing import clean_env

from .conftest import http_server

CLIENTS = Path(__file__).parent / "clients"
TABLE = CLIENTS / "tool_calls.json"
INSPECTOR = CLIENTS / "node_modules" / ".bin" / "mcp-inspector"
SERVER = [sys.executable, "-m", "fal_mcp.cli", "serve"]
RECORD = [sys.executable, str(CLIENTS / "record_stdio.py")]
TOKEN = "generic-clients-test-token"  # HTTP: the owner of the jobs across the Inspector's sessions
HELD_ENDPOINT = "fal-ai/lyria2"  # the job cancel_job cancels: the sandbox never finishes it
CALL_TIMEOUT = 180  # a hang guard for one client process, never a timing assertion


# -- the Node clients -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_clients() -> Path:
    """tests/clients/node_modules, installed by `npm ci` from the lock file (once: again only when the
    lock file changes). pytest-xdist workers take turns through a file lock."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = f"{'node' if node is None else 'npm'} is not installed: the generic MCP client tests need Node.js and npm"
        print(f"SKIPPED: {message}")
        pytest.skip(message)
    stamp = CLIENTS / "node_modules" / ".fal-mcp-installed"
    wanted = hashlib.sha256((CLIENTS / "package-lock.json").read_bytes()).hexdigest()
    with _file_lock(CLIENTS / ".npm-ci.lock"):
        if not stamp.exists() or stamp.read_text() != wanted:
            started = time.monotonic()
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                cwd=CLIENTS,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
            stamp.write_text(wanted)
            print(f"npm ci in tests/clients: {time.monotonic() - started:.1f} s")
    return CLIENTS


@contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no parallel workers to race with here
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- the sandbox, the inputs and the table ----------------------------------------------------------------


@pytest.fixture(scope="module")
def client_sandbox():
    """One in-process sandbox for this module's server subprocesses (every Inspector call over stdio is
    a server process of its own: the jobs live on here, and so do the records the tests read)."""
    from fal_mcp_sandbox import Sandbox

    sb = Sandbox.start_in_thread()
    yield sb
    sb.state.reset()
    sb.stop_thread()


@pytest.fixture
def sandbox_for_run(client_sandbox):
    client_sandbox.state.reset()
    client_sandbox.state.add_fault(outcome="never_finish", endpoint=HELD_ENDPOINT, times=1)
    yield client_sandbox
    client_sandbox.state.reset()


def media_inputs() -> dict[str, str]:
    """The data: URIs the generation tools take: a 320x240 PNG, a white mask, a short MP4."""
    from PIL import Image

    from fal_mcp_sandbox import media

    def data_uri(data: bytes, mime: str) -> str:
        return f"data:{mime};base64," + base64.b64encode(data).decode()

    def png(colour: str) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (320, 240), colour).save(buffer, "PNG")
        return buffer.getvalue()

    frames = media.video_frames(64, 48, 16, "input clip", 1)
    return {
        "image": data_uri(png("teal"), "image/png"),
        "mask": data_uri(png("white"), "image/png"),
        "video": data_uri(media.mp4(frames, 64, 48, 8), "video/mp4"),
    }


def fill(value: Any, values: dict[str, Any]) -> Any:
    """The table's placeholders filled: a string that is a whole "<name>" of `values` is that value
    (the same rule call_tools.mjs applies)."""
    if isinstance(value, str) and value.startswith("<") and value.endswith(">") and value[1:-1] in values:
        return values[value[1:-1]]
    if isinstance(value, list):
        return [fill(item, values) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, values) for key, item in value.items()}
    return value


@pytest.fixture
def run(node_clients, tmp_path, sandbox_for_run):
    """What one client run needs: the table with its files filled in (written to `table_path` for the
    Node script), the server's environment, and the sandbox."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    upload = allowed / "upload.png"
    files = media_inputs()
    upload.write_bytes(base64.b64decode(files["image"].split(",", 1)[1]))
    table = json.loads(TABLE.read_text())
    table["calls"] = fill(table["calls"], {**files, "upload": str(upload)})
    table_path = tmp_path / "tool_calls.json"
    table_path.write_text(json.dumps(table))
    env = clean_env(
        {
            **sandbox_for_run.env(),
            # one job store for every server process of the run (the Inspector starts one per call)
            "FAL_MCP_STORE": f"sqlite:///{tmp_path / 'jobs.db'}",
            "FAL_MCP_ALLOWED_DIRS": str(allowed),
        }
    )
    return Run(tmp_path, table["calls"], table_path, env, sandbox_for_run)


class Run:
    def __init__(self, path: Path, calls: list[dict], table_path: Path, env: dict[str, str], sandbox):
        self.path, self.calls, self.table_path, self.env, self.sandbox = path, calls, table_path, env, sandbox
        self.wire_log = path / "wire.jsonl"  # what the recording shim saw on stdio

    def server_env(self) -> dict[str, str]:
        """The variables a client that spawns the server with an environment of its own (the Inspector
        passes little of its own on) must hand it: this run's settings, and the test's PYTHONPATH if
        any, so the server runs the code under test."""
        return {
            name: value for name, value in self.env.items() if name.startswith("FAL_") or name == "PYTHONPATH"
        }

    def stdio_wire(self) -> list[dict]:
        return [json.loads(line) for line in self.wire_log.read_text().splitlines() if line.strip()]


# -- a recording proxy for streamable HTTP ------------------------------------------------------------------

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "host", "content-length", "date", "server"}


class RecordingProxy:
    """A loopback HTTP proxy in front of the server that keeps every request body the client sent, and
    streams the answers (JSON or server-sent events) back as they come."""

    def __init__(self, upstream: str):
        host_port = upstream.removeprefix("http://").split("/", 1)[0]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.bodies: list[bytes] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if body:
                    proxy.bodies.append(body)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                upstream = http.client.HTTPConnection(proxy.host, proxy.port, timeout=CALL_TIMEOUT)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    self.send_response(answer.status, answer.reason)
                    for name, value in answer.getheaders():
                        if name.lower() not in HOP_HEADERS:
                            self.send_header(name, value)
                    self.send_header("Connection", "close")  # the answer ends where the connection does
                    self.end_headers()
                    while chunk := answer.read1(65536):
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except (OSError, http.client.HTTPException):  # the client or the server went away mid-stream
                    pass
                finally:
                    upstream.close()

            do_GET = do_POST = do_DELETE = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mcp"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def messages(self) -> list[dict]:
        found: list[dict] = []
        for body in self.bodies:
            parsed = json.loads(body)
            found.extend(parsed if isinstance(parsed, list) else [parsed])
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def recorded_http_server(run: Run):
    """`fal-mcp serve --transport http` on a free loopback port (bearer token set: the Inspector's
    sessions are one owner), behind a RecordingProxy; yields the proxy."""
    with http_server(["--transport", "http"], {**run.env, "FAL_MCP_AUTH_TOKEN": TOKEN}) as (_, base):
        proxy = RecordingProxy(base)
        try:
            yield proxy
        finally:
            proxy.close()


# -- the clients ----------------------------------------------------------------------------------------


def ts_sdk(run: Run, target: list[str], env: dict[str, str] | None = None) -> dict:
    """call_tools.mjs: the TypeScript SDK client calls the whole table in one session."""
    out = run.path / "ts-sdk.json"
    done = subprocess.run(
        [shutil.which("node"), str(CLIENTS / "call_tools.mjs"), str(run.table_path), str(out), *target],
        cwd=CLIENTS,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT * 4,
    )
    assert done.returncode == 0 and out.exists(), f"call_tools.mjs failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(out.read_text())


def inspector(run: Run, method_args: list[str], connection: list[str]) -> subprocess.CompletedProcess:
    home = run.path / "home"  # the Inspector keeps a catalog and a store under ~/.mcp-inspector
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [str(INSPECTOR), "--cli", *method_args, *connection],
        cwd=run.path,
        env=clean_env({"HOME": str(home), "MCP_INSPECTOR_SECRET_STORE": "memory"}),
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT,
    )


def tool_arg(name: str, value: Any) -> str:
    """A `--tool-arg` as a person types it: strings as they are, everything else as JSON (num_images=2,
    camera={"angle":"low"}, enable_safety_checker=false)."""
    return f"{name}={value if isinstance(value, str) else json.dumps(value)}"


def inspector_run(run: Run, connection: list[str]) -> dict:
    """The Inspector CLI calls the whole table, one process (and one MCP session) per call, as a person
    scripting it would; returns the same shape call_tools.mjs writes."""
    listed = inspector(run, ["--method", "tools/list"], connection)
    assert listed.returncode == 0, f"Inspector tools/list failed:\n{listed.stdout}\n{listed.stderr}"
    tools = [tool["name"] for tool in json.loads(listed.stdout)["tools"]]
    saved: dict[str, Any] = {}
    results = []
    for call in run.calls:
        arguments = fill(call["arguments"], saved)
        method = ["--method", "tools/call", "--tool-name", call["tool"]]
        if arguments:
            method += ["--tool-arg", *(tool_arg(name, value) for name, value in arguments.items())]
        done = inspector(run, method, connection)
        entry: dict[str, Any] = {"tool": call["tool"], "arguments": arguments}
        try:
            result = json.loads(done.stdout)
        except ValueError:
            result = None
        if done.returncode != 0 or not isinstance(result, dict) or "content" not in result:
            entry["error"] = (
                f"exit {done.returncode}: {done.stdout.strip()[-2000:]} {done.stderr.strip()[-2000:]}"
            )
        else:
            entry["isError"] = result.get("isError") is True
            entry["structuredContent"] = result.get("structuredContent")
            entry["text"] = "\n".join(part["text"] for part in result["content"] if part["type"] == "text")
            for name, field in call.get("save", {}).items():
                saved[name] = (entry["structuredContent"] or {}).get(field)
        results.append(entry)
    return {"tools": tools, "results": results}


def inspector_stdio(run: Run) -> list[str]:
    server_env = [arg for name, value in run.server_env().items() for arg in ("-e", f"{name}={value}")]
    return [*server_env, "--", *RECORD, str(run.wire_log), *SERVER]


def inspector_http(url: str) -> list[str]:
    return ["--transport", "http", "--header", f"Authorization: Bearer {TOKEN}", "--", url]


# -- what every run must show -------------------------------------------------------------------------


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values, types included (2 is not 2.0 is not "2", False is not 0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def check(run: Run, outcome: dict, wire: list[dict], client: str) -> None:
    calls, results = run.calls, outcome["results"]
    listed = set(outcome["tools"])
    tabled = {call["tool"] for call in calls}
    assert listed == tabled, (
        f"{client}: tools/list and tests/clients/tool_calls.json differ: listed only "
        f"{sorted(listed - tabled)}, in the table only {sorted(tabled - listed)}"
    )
    assert [r["tool"] for r in results] == [c["tool"] for c in calls]

    failures = [
        f"- {r['tool']}({short(r['arguments'])}): "
        + (
            f"the client refused the result: {r['error']}"
            if "error" in r
            else f"isError: {r['text']}"
            if r.get("isError")
            else f"structuredContent does not match the outputSchema: {r['schemaError']}"
        )
        for r in results
        if "error" in r or r.get("isError") or r.get("schemaError")
    ]
    assert not failures, f"{client}: {len(failures)} of {len(results)} calls failed:\n" + "\n".join(failures)

    # The arguments the server received, exactly: every value of the table, typed as in the table.
    expected, saved = [], {}
    for call, result in zip(calls, results, strict=True):
        expected.append(fill(call["arguments"], saved))
        for name, field in call.get("save", {}).items():
            saved[name] = (result.get("structuredContent") or {}).get(field)
    sent = [m for m in wire if m.get("method") == "tools/call"]
    assert [m["params"]["name"] for m in sent] == [c["tool"] for c in calls], f"{client}: calls on the wire"
    untyped = [
        f"- {c['tool']}: received {short(m['params'].get('arguments', {}))}, the table says {short(e)}"
        for c, m, e in zip(calls, sent, expected, strict=True)
        if not same_json(m["params"].get("arguments", {}), e)
    ]
    assert not untyped, f"{client}: arguments that did not arrive as given:\n" + "\n".join(untyped)

    by_tool = {r["tool"]: r for r in results}
    submissions = run.sandbox.state.submissions

    def submitted(endpoint: str, test) -> dict:
        found = [s["input"] for s in submissions if s["endpoint_id"] == endpoint and test(s["input"])]
        assert len(found) == 1, (
            f"{client}: {len(found)} matching submissions to {endpoint}: {short(submissions)}"
        )
        return found[0]

    # generate_image num_images=2: an integer on the wire, at fal, and two images back
    image = submitted("fal-ai/flux/schnell", lambda input: input["prompt"] == "a red fox in the snow")
    assert type(image["num_images"]) is int and image["num_images"] == 2
    assert len(by_tool["generate_image"]["structuredContent"]["files"]) == 2
    # upscale_image scale=4 (an integer enum): AuraSR's upscale_factor
    upscale = submitted("fal-ai/aura-sr", lambda input: True)
    assert type(upscale["upscale_factor"]) is int and upscale["upscale_factor"] == 4
    # generate_image_structured's nested camera object became part of the prompt sent
    structured = submitted(
        "fal-ai/flux/schnell", lambda input: input["prompt"].lower().startswith("a fox in the snow")
    )
    assert all(part in structured["prompt"] for part in ("low", "f/1.8", "ISO 400", "film grain"))
    # a boolean inside an object: run_model's input, as is
    lighthouse = submitted("fal-ai/flux/schnell", lambda input: input["prompt"] == "a lighthouse at dusk")
    assert lighthouse["enable_safety_checker"] is False
    # the jobs: check_job of a finished job returns its result; cancel_job cancelled the held one
    assert by_tool["check_job"]["text"].startswith("Job done."), by_tool["check_job"]["text"]
    cancelled = by_tool["cancel_job"]["structuredContent"]
    assert cancelled["status"] == "cancelled" and cancelled["request_id"] in run.sandbox.state.cancels
    listed_jobs = [job["job_id"] for job in by_tool["list_jobs"]["structuredContent"]["jobs"]]
    assert len(listed_jobs) == 5 and {saved["job_id"], saved["held_job_id"]} <= set(listed_jobs)
    assert by_tool["upload_file"]["structuredContent"]["url"].startswith(run.sandbox.base_url)
    # results with nulls the output schemas must allow (no budget set; a price fal does not publish; a
    # tool that works locally, with no fal endpoint)
    assert by_tool["get_budget"]["structuredContent"]["day"]["limit"] is None
    assert by_tool["get_pricing"]["structuredContent"]["prices"][-1]["unit_price"] is None
    recommended = by_tool["recommend_model"]["structuredContent"]["recommendations"]
    assert any(r["endpoint_id"] is None for r in recommended), "no local tool recommended: pick another task"


# -- the tests ------------------------------------------------------------------------------------------


def test_ts_sdk_over_http_calls_every_tool(run):
    with recorded_http_server(run) as proxy:
        outcome = ts_sdk(run, ["--url", proxy.url, "--header", f"Authorization: Bearer {TOKEN}"])
        wire = proxy.messages()
    check(run, outcome, wire, f"TypeScript SDK {outcome['sdk']} over HTTP")


@pytest.mark.slow
def test_ts_sdk_over_stdio_calls_every_tool(run):
    outcome = ts_sdk(run, ["--", *RECORD, str(run.wire_log), *SERVER], env=run.env)
    check(run, outcome, run.stdio_wire(), f"TypeScript SDK {outcome['sdk']} over stdio")


@pytest.mark.slow
def test_inspector_over_stdio_calls_every_tool(run):
    outcome = inspector_run(run, inspector_stdio(run))
    check(run, outcome, run.stdio_wire(), "MCP Inspector CLI over stdio")


@pytest.mark.slow
def test_inspector_over_http_calls_every_tool(run):
    with recorded_http_server(run) as proxy:
        outcome = inspector_run(run, inspector_http(proxy.url))
        wire = proxy.messages()
    check(run, outcome, wire, "MCP Inspector CLI over HTTP")
