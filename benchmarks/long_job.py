"""A 5-minute video job from clients that give a call 30 s: it must end with the video saved and returned,
with no cancel, over stdio (job tools), over streamable HTTP (job tools) and as a 2025-11-25 task.

The sandbox (its own process) runs every job for --job-seconds (300 by default). The three clients run
at once, each against its own server, and print what they saw. Run from the repository root:

    .venv/bin/python benchmarks/long_job.py            # about 5 minutes
    .venv/bin/python benchmarks/long_job.py --job-seconds 20
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import anyio
from common import BIN, clean_env, sandbox_process, server_process

CALL_LIMIT = 30.0  # what each client gives one call
VIDEO = {"prompt": "a slow pan over mountains", "model": "kling.t2v", "duration": 10}


async def over_stdio(env: dict, report: dict) -> None:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=str(BIN / "fal-mcp"), args=["serve"], env=env)
    async with Client(params, mode="legacy") as client:
        await job_tools(client, report)


async def over_http(base: str, report: dict) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(timeout=httpx2.Timeout(CALL_LIMIT + 10))
    async with Client(streamable_http_client(base + "/mcp", http_client=http), mode="legacy") as client:
        await job_tools(client, report)


async def job_tools(client, report: dict) -> None:
    started = time.monotonic()
    beats: list[float] = []

    async def on_progress(progress, total, message) -> None:
        beats.append(time.monotonic())

    handed = await client.call_tool(
        "generate_video", VIDEO, read_timeout_seconds=CALL_LIMIT, progress_callback=on_progress
    )
    report["hand_off_after_s"] = round(time.monotonic() - started, 1)
    gaps = [
        later - earlier for earlier, later in zip([started, *beats], [*beats, time.monotonic()], strict=True)
    ]
    report["progress_before_hand_off"] = {"notifications": len(beats), "longest_gap_s": round(max(gaps), 2)}
    job_id = handed.structured_content["job"]["job_id"]
    checks = 0
    while True:
        checks += 1
        checked = await client.call_tool(
            "check_job", {"job_id": job_id, "wait_seconds": CALL_LIMIT - 5}, read_timeout_seconds=CALL_LIMIT
        )
        if checked.content[0].text.startswith("Job done"):
            break
        assert not checked.is_error, checked.content[0].text
    report.update(
        total_s=round(time.monotonic() - started, 1),
        check_job_calls=checks,
        video=checked.structured_content["files"][0]["local_path"],
    )


async def as_task(base: str, report: dict) -> None:
    """2025-11-25 task over raw JSON-RPC: create, then tasks/get until done, tasks/result."""
    import httpx

    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

    async with httpx.AsyncClient(timeout=CALL_LIMIT) as http:

        async def request(method: str, params: dict, number: int) -> dict:
            response = await http.post(
                base + "/mcp",
                headers=headers,
                json={"jsonrpc": "2.0", "id": number, "method": method, "params": params},
            )
            if "mcp-session-id" in response.headers:
                headers.update(
                    {
                        "Mcp-Session-Id": response.headers["mcp-session-id"],
                        "MCP-Protocol-Version": "2025-11-25",
                    }
                )
            text = response.text
            return json.loads(
                text
                if text.startswith("{")
                else [line[5:] for line in text.splitlines() if line.startswith("data:")][-1]
            )

        await request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "long-job", "version": "0"},
            },
            1,
        )
        await http.post(
            base + "/mcp", headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
        )
        started = time.monotonic()
        created = await request(
            "tools/call", {"name": "generate_video", "arguments": VIDEO, "task": {"ttl": 3600000}}, 2
        )
        task_id = created["result"]["task"]["taskId"]
        report["task_created_after_s"] = round(time.monotonic() - started, 1)
        polls, number = 0, 3
        while True:
            number += 1
            polls += 1
            task = (await request("tasks/get", {"taskId": task_id}, number))["result"]
            if task["status"] != "working":
                break
            await anyio.sleep(5)
        result = (await request("tasks/result", {"taskId": task_id}, number + 1))["result"]
        report.update(
            total_s=round(time.monotonic() - started, 1),
            status=task["status"],
            tasks_get_calls=polls,
            video=result["structuredContent"]["files"][0]["local_path"],
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job-seconds", type=float, default=300)
    args = parser.parse_args()
    reports: dict[str, dict] = {"stdio": {}, "http": {}, "task": {}}
    with (
        tempfile.TemporaryDirectory() as workdir,
        sandbox_process("--job-seconds", str(args.job_seconds)) as (sandbox, sandbox_proc),
    ):
        out = Path(workdir) / "out"
        env = clean_env(
            {
                **sandbox,
                "FAL_MCP_OUTPUT_DIR": str(out),
                "FAL_MCP_STORE": f"sqlite:///{workdir}/jobs.db",
                "FAL_MCP_HANDOFF_AFTER": "20",
                "FAL_MCP_TIMEOUT_VIDEO": str(args.job_seconds + 120),
            }
        )
        with server_process(["--transport", "http"], env) as (_, base):

            async def everything() -> None:
                async with anyio.create_task_group() as group:
                    group.start_soon(over_stdio, env, reports["stdio"])
                    group.start_soon(over_http, base, reports["http"])
                    group.start_soon(as_task, base, reports["task"])

            started = time.monotonic()
            anyio.run(everything)
            wall = time.monotonic() - started
        saved = sorted(path.name for path in out.iterdir())
        origin = urlsplit(sandbox["FAL_MCP_QUEUE_URL"])
        cancels = json.loads(
            urllib.request.urlopen(f"{origin.scheme}://{origin.netloc}/_sandbox/cancels").read()
        )
    print(
        json.dumps(
            {
                "job_seconds": args.job_seconds,
                "client_call_limit_s": CALL_LIMIT,
                "wall_s": round(wall, 1),
                "saved_files": saved,
                "fal_cancels": cancels,
                **reports,
            },
            indent=2,
        )
    )
    ok = len(saved) == 3 and all(report.get("video") for report in reports.values()) and not cancels
    print("OK" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
