"""Every tool's structuredContent is valid for the outputSchema the tool lists, on every path a result
takes, as clients check it: the Python SDK's client raises on a mismatch, the TypeScript SDK's rejects
the call ("Structured content does not match the tool's output schema").

The paths, each a plan of calls covering every tool (the calls of tests/clients/tool_calls.json, which
test_generic_clients.py keeps in step with tools/list):

- success: each tool's call of the table, and a cancel_job of a job that had ended;
- with content: answers that say no or nothing but are results, not errors (fal refusing the usage
  report, a search matching nothing, no jobs yet);
- refused: each tool with an argument it does not take (an isError result: a structuredContent it
  carries must still be valid, the TypeScript SDK checks those too);
- submit_job: each tool run as a job (the local ones finish at once: submit_job must still answer with
  its own shape, not the tool's);
- handed off: each tool with FAL_MCP_HANDOFF_AFTER=0 and fal's jobs held, so every call that submits a
  job returns while it runs;
- confirmation asked (in process only): FAL_MCP_CONFIRM_ABOVE set, so every paid call is refused with a
  confirmation token.

Run in process (ToolTable, validated here with jsonschema), by the Python SDK's client over stdio in
both protocol eras (mode="legacy": the initialize handshake; the default: 2026-07-28), and by the
TypeScript SDK's client over streamable HTTP (tests/clients/call_tools.mjs: the SDK's own check, and the
script's Ajv check of every result, errors included). The TypeScript SDK over stdio is slow-marked: the
same client code, another transport."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema.validators import Draft202012Validator, validator_for

from fal_mcp_sandbox.testing import clean_env, sandbox_settings

from . import test_generic_clients as generic
from .conftest import http_server, stdio_client
from .test_generic_clients import CALL_TIMEOUT, HELD_ENDPOINT, TABLE, fill, media_inputs

node_clients = generic.node_clients  # the fixture: tests/clients/node_modules, installed by npm ci

pytestmark = pytest.mark.anyio
JOB_TOOLS = {"submit_job", "check_job", "cancel_job", "list_jobs"}
TOKEN = "output-schemas-test-token"
# Every tool whose table call submits a fal job: handed off when FAL_MCP_HANDOFF_AFTER is 0.
HANDED_OFF = {
    "run_model",
    "generate_image",
    "generate_image_structured",
    "generate_image_from_image",
    "edit_image",
    "inpaint_image",
    "remove_background",
    "upscale_image",
    "generate_video",
    "generate_video_from_image",
    "generate_video_from_video",
    "generate_music",
}


# -- the plans ------------------------------------------------------------------------------------------


def table_calls(upload: Path) -> list[dict]:
    """The table's calls, its media placeholders filled in (<job_id> and such are filled as it runs)."""
    calls = json.loads(TABLE.read_text())["calls"]
    return fill(calls, {**media_inputs(), "upload": str(upload)})


WITH_CONTENT = [  # run first, on a fresh job store, with fal answering 403 to the usage report
    {"tool": "list_jobs", "arguments": {}},
    {"tool": "get_usage", "arguments": {"start": "2026-01-01", "end": "2026-01-07"}},
    {"tool": "list_models", "arguments": {"search": "qqqzzz-no-such-model"}},
    {"tool": "recommend_model", "arguments": {"task": "qqqzzz xyzzy plugh"}},
]


def success(calls: list[dict]) -> list[dict]:
    # and cancel_job of a job that has ended (check_job waited for it): a result, not an error
    return [*calls, {"tool": "cancel_job", "arguments": {"job_id": "<job_id>"}}]


def refused(calls: list[dict]) -> list[dict]:
    tools = dict.fromkeys(call["tool"] for call in calls)
    return [{"tool": tool, "arguments": {"no_such_argument": 1}} for tool in tools]


def as_jobs(calls: list[dict]) -> list[dict]:
    return [
        {"tool": "submit_job", "arguments": {"tool": call["tool"], "arguments": call["arguments"]}}
        for call in calls
        if call["tool"] not in JOB_TOOLS
    ]


def handed_off(calls: list[dict]) -> list[dict]:
    """The table with its jobs held: check_job does not wait for one that never ends."""
    return [
        {**call, "arguments": {**call["arguments"], "wait_seconds": 0}}
        if call["tool"] == "check_job"
        else call
        for call in calls
    ]


# -- running a plan and checking what came back ------------------------------------------------------------


async def run_plan(call, calls: list[dict]) -> list[dict]:
    """Each call in order through `call(tool, arguments) -> (is_error, structured, text)`; what came
    back, or the exception a client raised (`error`)."""
    saved: dict[str, Any] = {}
    results = []
    for planned in calls:
        arguments = fill(planned["arguments"], saved)
        entry: dict[str, Any] = {"tool": planned["tool"], "arguments": arguments}
        try:
            entry["isError"], entry["structuredContent"], entry["text"] = await call(
                planned["tool"], arguments
            )
        except Exception as exc:  # a client refusing the result raises
            entry["error"] = f"{type(exc).__name__}: {exc}"
        for name, field in planned.get("save", {}).items():
            saved[name] = (entry.get("structuredContent") or {}).get(field)
        results.append(entry)
    return results


def schema_errors(schema: dict, instance: Any) -> list[str]:
    validator = validator_for(schema, default=Draft202012Validator)(schema)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


def problems(results: list[dict], schemas: dict[str, dict], *, errors: bool | None) -> list[str]:
    """What is wrong: a result a client refused, structuredContent missing or not matching the tool's
    outputSchema, or (`errors` True or False) an isError other than expected."""
    found = []
    for result in results:
        tool, where = result["tool"], f"{result['tool']}({json.dumps(result['arguments'])[:160]})"
        if "error" in result:
            found.append(f"{where}: the client refused the result: {result['error']}")
            continue
        if result.get("schemaError"):
            found.append(f"{where}: call_tools.mjs's check: {result['schemaError']}")
        structured, schema = result["structuredContent"], schemas.get(tool)
        if schema is not None and structured is None and not result["isError"]:
            found.append(f"{where}: no structuredContent, though the tool lists an outputSchema")
        if schema is not None and structured is not None:
            found += [f"{where}: {message}" for message in schema_errors(schema, structured)]
        if errors is not None and result["isError"] != errors:
            found.append(f"{where}: isError is {result['isError']}: {result.get('text', '')[:300]}")
    return found


def assert_valid(results: list[dict], schemas: dict[str, dict], path: str, *, errors: bool | None) -> None:
    found = problems(results, schemas, errors=errors)
    assert not found, f"{path}: {len(found)} problem(s):\n" + "\n".join(found)


def assert_handed_off(results: list[dict]) -> None:
    handed = {
        r["tool"] for r in results if ((r.get("structuredContent") or {}).get("job") or {}).get("job_id")
    }
    assert HANDED_OFF <= handed, f"not handed off: {sorted(HANDED_OFF - handed)}"


# -- in process ----------------------------------------------------------------------------------------------


@pytest.fixture
def upload_file(tmp_path) -> Path:
    import base64

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    path = allowed / "upload.png"
    path.write_bytes(base64.b64decode(media_inputs()["image"].split(",", 1)[1]))
    return path


def in_process(table):
    async def call(tool: str, arguments: dict):
        result = await table.call(tool, arguments)
        text = "\n".join(part.text for part in result.content if part.type == "text")
        return result.is_error, result.structured_content, text

    return call


async def test_in_process_every_path(sandbox, registry, upload_file):
    from fal_mcp.gateway import FalGateway
    from fal_mcp.server import ToolTable

    calls = table_calls(upload_file)
    allowed = str(upload_file.parent)

    def session(**settings):
        return sandbox_settings(
            sandbox, FAL_MCP_ALLOWED_DIRS=allowed, FAL_MCP_MAX_RETRY_AFTER=0.5, **settings
        )

    sandbox.state.add_fault(outcome="never_finish", endpoint=HELD_ENDPOINT, times=1)
    async with FalGateway(settings := session()) as gateway, ToolTable(registry, settings, gateway) as table:
        schemas = {tool.name: tool.output_schema for tool in table.listing() if tool.output_schema}
        assert set(schemas) >= {"submit_job", "list_models", "compose_images", "upload_file", "run_model"}
        call = in_process(table)
        sandbox.state.set_config(usage_forbidden=True)
        with_content = await run_plan(call, WITH_CONTENT)
        sandbox.state.set_config(usage_forbidden=False)
        assert_valid(with_content, schemas, "with content", errors=False)
        assert with_content[1]["structuredContent"]["note"], with_content[1]["text"]  # fal said 403
        assert_valid(await run_plan(call, success(calls)), schemas, "success", errors=False)
        assert_valid(await run_plan(call, refused(calls)), schemas, "refused", errors=True)
        jobs = await run_plan(call, as_jobs(calls))
        assert_valid(jobs, schemas, "submit_job", errors=False)
        at_once = {r["arguments"]["tool"] for r in jobs if "finished at once" in r["text"]}
        assert {"list_models", "compose_images", "upload_file"} <= at_once

    sandbox.state.reset()
    sandbox.state.add_fault(outcome="hold", times=-1)  # every job runs until the test ends
    async with (
        FalGateway(settings := session(FAL_MCP_HANDOFF_AFTER=0)) as gateway,
        ToolTable(registry, settings, gateway) as table,
    ):
        results = await run_plan(in_process(table), handed_off(calls))
        assert_valid(results, schemas, "handed off", errors=False)
        assert_handed_off(results)
    sandbox.state.reset()

    async with (
        FalGateway(settings := session(FAL_MCP_CONFIRM_ABOVE=0.000001)) as gateway,
        ToolTable(registry, settings, gateway) as table,
    ):
        results = await run_plan(in_process(table), calls)
        assert_valid(results, schemas, "confirmation asked", errors=None)
        asked = {r["tool"] for r in results if r["isError"] and "confirm" in r["text"]}
        assert {"generate_image", "upscale_image", "generate_music"} <= asked, asked


# -- the Python SDK's client, over stdio, in both protocol eras ----------------------------------------------


@pytest.fixture
def served_env(thread_sandbox, tmp_path, upload_file):
    thread_sandbox.state.reset()
    yield clean_env(
        {
            **thread_sandbox.env(),
            "FAL_MCP_STORE": f"sqlite:///{tmp_path / 'jobs.db'}",
            "FAL_MCP_ALLOWED_DIRS": str(upload_file.parent),
        }
    )
    thread_sandbox.state.reset()


def sdk_call(client):
    async def call(tool: str, arguments: dict):
        result = await client.call_tool(tool, arguments)  # raises if the result breaks the tool's schema
        text = "\n".join(part.text for part in result.content if part.type == "text")
        return result.is_error, result.structured_content, text

    return call


async def listed_schemas(client) -> dict[str, dict]:
    return {tool.name: tool.output_schema for tool in (await client.list_tools()).tools if tool.output_schema}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_python_sdk_every_path(thread_sandbox, served_env, upload_file, mode):
    calls = table_calls(upload_file)
    state = thread_sandbox.state
    state.add_fault(outcome="never_finish", endpoint=HELD_ENDPOINT, times=1)
    async with stdio_client(["serve"], served_env, mode=mode) as client:
        schemas = await listed_schemas(client)
        call = sdk_call(client)
        state.set_config(usage_forbidden=True)
        with_content = await run_plan(call, WITH_CONTENT)
        state.set_config(usage_forbidden=False)
        assert_valid(with_content, schemas, f"{mode}: with content", errors=False)
        assert_valid(await run_plan(call, success(calls)), schemas, f"{mode}: success", errors=False)
        assert_valid(await run_plan(call, refused(calls)), schemas, f"{mode}: refused", errors=True)
        assert_valid(await run_plan(call, as_jobs(calls)), schemas, f"{mode}: submit_job", errors=False)
    state.reset()
    state.add_fault(outcome="hold", times=-1)
    async with stdio_client(["serve"], {**served_env, "FAL_MCP_HANDOFF_AFTER": "0"}, mode=mode) as client:
        results = await run_plan(sdk_call(client), handed_off(calls))
    assert_valid(results, schemas, f"{mode}: handed off", errors=False)
    assert_handed_off(results)


# -- the TypeScript SDK's client ----------------------------------------------------------------------------


def ts_sdk(node_clients: Path, path: Path, calls: list[dict], target: list[str], env=None) -> dict:
    """call_tools.mjs runs `calls` in one session; its outcome."""
    table, out = path / f"{path.name}-calls.json", path / f"{path.name}-outcome.json"
    table.write_text(json.dumps({"calls": calls}))
    out.unlink(missing_ok=True)
    done = subprocess.run(
        [shutil.which("node"), str(node_clients / "call_tools.mjs"), str(table), str(out), *target],
        cwd=node_clients,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT * 4,
    )
    assert done.returncode == 0 and out.exists(), f"call_tools.mjs failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(out.read_text())


def ts_plans(ts, calls: list[dict], state, name: str) -> None:
    """The plans through `ts(calls) -> outcome` (one session each, one server)."""
    state.set_config(usage_forbidden=True)
    outcome = ts(WITH_CONTENT)
    state.set_config(usage_forbidden=False)
    schemas = outcome["outputSchemas"]
    assert_valid(outcome["results"], schemas, f"{name}: with content", errors=False)
    outcome = ts([*success(calls), *refused(calls), *as_jobs(calls)])
    results, count = outcome["results"], len(success(calls))
    assert_valid(results[:count], schemas, f"{name}: success", errors=False)
    assert_valid(results[count : count + len(refused(calls))], schemas, f"{name}: refused", errors=True)
    assert_valid(results[count + len(refused(calls)) :], schemas, f"{name}: submit_job", errors=False)


async def test_ts_sdk_over_http_every_path(node_clients, thread_sandbox, served_env, upload_file, tmp_path):
    calls = table_calls(upload_file)
    state = thread_sandbox.state
    env = {**served_env, "FAL_MCP_AUTH_TOKEN": TOKEN}
    target = ["--header", f"Authorization: Bearer {TOKEN}"]
    state.add_fault(outcome="never_finish", endpoint=HELD_ENDPOINT, times=1)
    with http_server(["--transport", "http"], env) as (_, base):
        ts_plans(
            lambda plan: ts_sdk(node_clients, tmp_path, plan, ["--url", base + "/mcp", *target]),
            calls,
            state,
            "HTTP",
        )
    state.reset()
    state.add_fault(outcome="hold", times=-1)
    with http_server(["--transport", "http"], {**env, "FAL_MCP_HANDOFF_AFTER": "0"}) as (_, base):
        outcome = ts_sdk(node_clients, tmp_path, handed_off(calls), ["--url", base + "/mcp", *target])
    assert_valid(outcome["results"], outcome["outputSchemas"], "HTTP: handed off", errors=False)
    assert_handed_off(outcome["results"])


@pytest.mark.slow
async def test_ts_sdk_over_stdio_every_path(node_clients, thread_sandbox, served_env, upload_file, tmp_path):
    calls = table_calls(upload_file)
    state = thread_sandbox.state
    server = [sys.executable, "-m", "fal_mcp.cli", "serve"]
    state.add_fault(outcome="never_finish", endpoint=HELD_ENDPOINT, times=1)
    ts_plans(
        lambda plan: ts_sdk(node_clients, tmp_path, plan, ["--", *server], env=served_env),
        calls,
        state,
        "stdio",
    )
    state.reset()
    state.add_fault(outcome="hold", times=-1)
    env = {**served_env, "FAL_MCP_HANDOFF_AFTER": "0"}
    outcome = ts_sdk(node_clients, tmp_path, handed_off(calls), ["--", *server], env=env)
    assert_valid(outcome["results"], outcome["outputSchemas"], "stdio: handed off", errors=False)
    assert_handed_off(outcome["results"])
