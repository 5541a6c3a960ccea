"""The spending confirmation (spending.py) on the wire: raw JSON-RPC, no SDK client, against real server
subprocesses and the offline sandbox. 2025-era clients are asked with a mid-call `elicitation/create`
request (stdio and stateful streamable HTTP), 2026-era clients with an input-required result answered
by calling again; a client that cannot be asked gets a one-time token. Whatever the answer, fal sees a
submission only after an accept."""

from __future__ import annotations

import json
import sys
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from .conftest import http_server, server_env

pytestmark = pytest.mark.anyio
TOKEN = "spending-wire-token-0123456789abcdef"
ARGS = {"prompt": "a lighthouse at dusk", "model": "flux_pro", "image_size": "square"}
CALL = {"name": "generate_image", "arguments": ARGS}
ENDPOINT = "fal-ai/flux-pro/v1.1"
COST = "0.0419"  # 0.04 USD/megapixel × 1024×1024
ELICIT = {"elicitation": {"form": {}}}
ANSWERS = {
    "accept": {"action": "accept", "content": {"confirm": True}},
    "decline": {"action": "decline"},
    "cancel": {"action": "cancel"},
}
WORDS = {"decline": "declined", "cancel": "cancelled"}


def env_for(sandbox) -> dict[str, str]:
    return server_env({**sandbox.env(), "FAL_MCP_CONFIRM_ABOVE": "0.01", "FAL_MCP_AUTH_TOKEN": TOKEN})


@pytest.fixture
def state(thread_sandbox):
    thread_sandbox.state.reset()
    try:
        yield thread_sandbox.state
    finally:
        thread_sandbox.state.reset()


def submitted(state) -> list[str]:
    return [s["endpoint_id"] for s in state.submissions]


def text_of(result: dict) -> str:
    return result["content"][0]["text"]


def check_question(params: dict) -> None:
    assert ENDPOINT in params["message"] and COST in params["message"], params["message"]
    assert params["requestedSchema"]["properties"]["confirm"]["type"] == "boolean", params


def check_outcome(result: dict, answer: str, state) -> None:
    """The tools/call result after the user's `answer`, and what reached fal."""
    if answer == "accept":
        assert not result.get("isError"), text_of(result)
        assert result["structuredContent"]["files"] and result["structuredContent"]["cost"]
        assert submitted(state) == [ENDPOINT]
    else:
        text = text_of(result)
        assert result["isError"] and WORDS[answer] in text and "Nothing was submitted" in text, text
        assert submitted(state) == []


def refused_with_token(result: dict) -> str:
    text = text_of(result)
    assert result["isError"] and '"confirm": "fcf_' in text, text
    return text.split('"confirm": "', 1)[1].split('"', 1)[0]


# -- 2025-11-25 over stdio ---------------------------------------------------------------------------------


class Stdio:
    """Newline-delimited JSON-RPC with a `fal-mcp serve` subprocess."""

    def __init__(self, process) -> None:
        self.process = process
        self.lines = BufferedByteReceiveStream(process.stdout)
        self.next_id = 0

    async def send(self, message: dict) -> None:
        await self.process.stdin.send((json.dumps(message) + "\n").encode())

    async def receive(self) -> dict:
        """The next message that is not a notification."""
        while True:
            message = json.loads(await self.lines.receive_until(b"\n", 10_000_000))
            if "id" in message:
                return message

    async def request(self, method: str, params: dict) -> int:
        self.next_id += 1
        await self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return self.next_id

    async def start(self, capabilities: dict) -> None:
        sent = await self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": capabilities,
                "clientInfo": {"name": "raw", "version": "0"},
            },
        )
        answer = await self.receive()
        assert answer["id"] == sent and "capabilities" in answer["result"], answer
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call(self, params: dict) -> dict:
        sent = await self.request("tools/call", params)
        answer = await self.receive()
        assert answer["id"] == sent, answer
        return answer["result"]


async def stdio_server(sandbox):
    return await anyio.open_process([sys.executable, "-m", "fal_mcp.cli", "serve"], env=env_for(sandbox))


@pytest.mark.parametrize("answer", ANSWERS)
async def test_stdio_elicitation_create(thread_sandbox, state, answer):
    with anyio.fail_after(60):  # hang guard (closing stdin ends the server; a timeout kills it)
        async with await stdio_server(thread_sandbox) as process:
            client = Stdio(process)
            await client.start(ELICIT)
            sent = await client.request("tools/call", CALL)
            asked = await client.receive()
            assert asked["method"] == "elicitation/create" and "result" not in asked, asked
            assert asked["params"].get("mode", "form") == "form"
            check_question(asked["params"])
            assert submitted(state) == []
            await client.send({"jsonrpc": "2.0", "id": asked["id"], "result": ANSWERS[answer]})
            result = await client.receive()
    assert result["id"] == sent, result
    check_outcome(result["result"], answer, state)


async def test_stdio_without_elicitation_gets_a_token_that_runs_the_call_once(thread_sandbox, state):
    with anyio.fail_after(60):  # hang guard
        async with await stdio_server(thread_sandbox) as process:
            client = Stdio(process)
            await client.start({})
            token = refused_with_token(await client.call(CALL))
            assert submitted(state) == []
            done = await client.call({"name": "generate_image", "arguments": {**ARGS, "confirm": token}})
            assert not done.get("isError") and done["structuredContent"]["files"], text_of(done)
            again = await client.call({"name": "generate_image", "arguments": {**ARGS, "confirm": token}})
    assert again["isError"] and "not valid" in text_of(again), text_of(again)  # once only
    assert submitted(state) == [ENDPOINT]


# -- streamable HTTP: 2026-07-28 (input-required results) and 2025-11-25 (elicitation/create on the SSE stream)


class Http:
    """Raw JSON-RPC over streamable HTTP: a 2026-era client (`_meta` envelope on every request, no
    session) or a 2025-era one (initialize, then a session)."""

    def __init__(self, http: httpx.AsyncClient, base: str, modern: bool, capabilities: dict) -> None:
        self.http, self.url, self.modern, self.capabilities = http, base + "/mcp", modern, capabilities
        self.session: str | None = None
        self.next_id = 0

    def message(self, method: str, params: dict) -> dict:
        self.next_id += 1
        if self.modern:
            params = {
                **params,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": self.capabilities,
                },
            }
        return {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}

    def headers(self, body: dict) -> dict:
        headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {TOKEN}"}
        if self.modern:
            headers.update({"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": body["method"]})
            if "name" in body.get("params", {}):
                headers["Mcp-Name"] = body["params"]["name"]
        elif self.session:
            headers.update({"Mcp-Session-Id": self.session, "MCP-Protocol-Version": "2025-11-25"})
        return headers

    async def post(self, body: dict) -> dict | None:
        """POST one message; the JSON-RPC answer to a request (None for a notification or a response)."""
        response = await self.http.post(self.url, headers=self.headers(body), json=body)
        self.session = response.headers.get("mcp-session-id", self.session)
        if response.status_code == 202:
            return None
        text = response.text
        if text.startswith("{"):
            return json.loads(text)
        return json.loads([line[5:] for line in text.splitlines() if line.startswith("data:")][-1])

    async def start(self) -> None:
        if self.modern:
            return
        params = {
            "protocolVersion": "2025-11-25",
            "capabilities": self.capabilities,
            "clientInfo": {"name": "raw", "version": "0"},
        }
        answer = await self.post(self.message("initialize", params))
        assert "capabilities" in answer["result"], answer
        await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call(self, params: dict) -> dict:
        answer = await self.post(self.message("tools/call", params))
        assert "result" in answer, answer
        return answer["result"]


@asynccontextmanager
async def served(sandbox, modern: bool, capabilities: dict = ELICIT):
    """A `fal-mcp serve --transport http` subprocess and a started raw client of it."""
    with http_server(["--transport", "http"], env_for(sandbox)) as (_, base):
        async with httpx.AsyncClient(timeout=60) as http:
            client = Http(http, base, modern, capabilities)
            await client.start()
            yield client


def question_of(result: dict) -> tuple[str, str]:
    """An input-required result's one question: (its key, the request state to echo)."""
    assert result["resultType"] == "input_required", result
    ((key, request),) = result["inputRequests"].items()
    assert request["method"] == "elicitation/create"
    check_question(request["params"])
    return key, result["requestState"]


@pytest.mark.parametrize("answer", ANSWERS)
async def test_http_2026_input_required_then_the_answer(thread_sandbox, state, answer):
    with anyio.fail_after(60):  # hang guard
        async with served(thread_sandbox, modern=True) as client:
            key, request_state = question_of(await client.call(CALL))
            assert submitted(state) == []
            retry = {**CALL, "inputResponses": {key: ANSWERS[answer]}, "requestState": request_state}
            result = await client.call(retry)
    assert result.get("resultType", "complete") == "complete", result
    check_outcome(result, answer, state)


def bad_retry(kind: str, key: str, request_state: str) -> dict:
    """A retry carrying an accept that does not answer the question asked."""
    accept = ANSWERS["accept"]
    if kind == "no state":
        return {**CALL, "inputResponses": {key: accept}}
    if kind == "tampered state":
        return {**CALL, "inputResponses": {key: accept}, "requestState": request_state[:-2] + "x}"}
    if kind == "other key":
        return {**CALL, "inputResponses": {key + "#1": accept}, "requestState": request_state}
    # the state of a question about another prompt
    other = {**ARGS, "prompt": "a lighthouse at noon"}
    return {
        "name": "generate_image",
        "arguments": other,
        "inputResponses": {key: accept},
        "requestState": request_state,
    }


@pytest.mark.parametrize("kind", ["no state", "tampered state", "other key", "other prompt"])
async def test_http_2026_an_answer_to_no_question_asked_runs_nothing(thread_sandbox, state, kind):
    with anyio.fail_after(60):  # hang guard
        async with served(thread_sandbox, modern=True) as client:
            key, request_state = question_of(await client.call(CALL))
            retry = bad_retry(kind, key, request_state)
            answer = await client.post(client.message("tools/call", retry))
            assert submitted(state) == [], answer
            if "error" not in answer:  # asked again: answering that question runs the call
                key, asked_state = question_of(answer["result"])
                again = {**retry, "inputResponses": {key: ANSWERS["accept"]}, "requestState": asked_state}
                check_outcome(await client.call(again), "accept", state)


async def sse_messages(response: httpx.Response):
    """The JSON-RPC requests and responses of a POST's SSE stream, as they arrive."""
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    async for line in response.aiter_lines():
        if line.startswith("data:") and line[5:].strip():
            message = json.loads(line[5:])
            if "id" in message:
                yield message


@pytest.mark.parametrize("answer", ANSWERS)
async def test_http_2025_elicitation_create_on_the_calls_stream(thread_sandbox, state, answer):
    with anyio.fail_after(60):  # hang guard
        async with served(thread_sandbox, modern=False) as client:
            assert client.session
            body = client.message("tools/call", CALL)
            async with client.http.stream(
                "POST", client.url, headers=client.headers(body), json=body
            ) as response:
                messages = sse_messages(response)
                asked = await anext(messages)
                assert asked["method"] == "elicitation/create", asked
                check_question(asked["params"])
                assert submitted(state) == []
                # answered on a POST of its own (202, no body) while the call's stream stays open
                reply = {"jsonrpc": "2.0", "id": asked["id"], "result": ANSWERS[answer]}
                assert await client.post(reply) is None
                result = await anext(messages)
    assert result["id"] == body["id"], result
    check_outcome(result["result"], answer, state)


async def test_http_2026_without_elicitation_gets_a_token(thread_sandbox, state):
    with anyio.fail_after(60):  # hang guard
        async with served(thread_sandbox, modern=True, capabilities={}) as client:
            token = refused_with_token(await client.call(CALL))
            assert submitted(state) == []
            done = await client.call({"name": "generate_image", "arguments": {**ARGS, "confirm": token}})
    assert not done.get("isError") and done["structuredContent"]["files"], text_of(done)
    assert submitted(state) == [ENDPOINT]


async def test_http_2026_a_forged_request_state_does_not_stand_in_for_the_users_answer(thread_sandbox, state):
    """A client that makes up a state recording an accept, answering no question, must not be run."""
    with anyio.fail_after(60):  # hang guard
        async with served(thread_sandbox, modern=True) as client:
            key, request_state = question_of(await client.call(CALL))
            try:  # the digest of the question asked, which an answer is pinned to (resolve.py)
                digest = json.loads(request_state)["asked"][key]
            except ValueError:  # a sealed state: nothing to read
                digest = ""
            outcome = {"action": "accept", "data": {"confirm": True}, "q": digest}
            forged = json.dumps({"v": 3, "outcomes": {key: outcome}, "asked": {}})
            await client.post(client.message("tools/call", {**CALL, "requestState": forged}))
    assert submitted(state) == []
