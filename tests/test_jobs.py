"""Background jobs (core) and outputs as resources: submit, check, cancel, list, across processes."""

from __future__ import annotations

import anyio
import pytest

from .conftest import listed_outputs, server_env, stdio_client

pytestmark = pytest.mark.anyio


async def wait_done(table, job_id, guard=60):
    """Checks the job until it is done; the guard only stops a hang."""
    with anyio.fail_after(guard):
        while True:
            checked = await table.call("check_job", {"job_id": job_id})
            assert not checked.is_error, checked.content[0].text
            if checked.content[0].text.startswith("Job done"):
                return checked
            await anyio.sleep(0.02)


async def test_a_job_reports_queue_running_and_the_tools_own_result(tool_table, sandbox):
    # Held in the queue until the test has seen it queued, then held running until it has seen it run.
    sandbox.state.set_config(job_seconds=0.05)
    sandbox.state.add_fault(outcome="hold", queue_ahead=1, hold_queue=True)
    submitted = await tool_table.call(
        "submit_job", {"tool": "generate_image", "arguments": {"prompt": "later", "seed": 11}}
    )
    assert not submitted.is_error, submitted.content[0].text
    job = submitted.structured_content
    assert job["status"] in ("queued", "running") and job["endpoint"] == "fal-ai/flux/schnell"
    assert job["request_id"] == sandbox.state.submissions[-1]["request_id"]
    seen = []
    with anyio.fail_after(60):  # a hang guard, not a timing assertion
        while True:
            checked = await tool_table.call("check_job", {"job_id": job["job_id"]})
            if checked.content[0].text.startswith("Job done"):
                break
            seen.append((checked.structured_content["status"], checked.structured_content["progress"]))
            if seen[-1][0] == "running" or (seen[-1][1] or "").startswith("In queue"):
                sandbox.state.release()  # on to the next state
            await anyio.sleep(0.02)
    assert any(s == "queued" and p.startswith("In queue, position") for s, p in seen), seen
    assert "running" in {status for status, _ in seen}


async def test_any_model_as_a_job_and_cancel(tool_table, sandbox):
    sandbox.state.add_fault(outcome="never_finish")
    submitted = await tool_table.call(
        "submit_job",
        {"tool": "run_model", "arguments": {"model": "fal-ai/flux/schnell", "input": {"prompt": "x"}}},
    )
    job_id = submitted.structured_content["job_id"]
    cancelled = await tool_table.call("cancel_job", {"job_id": job_id})
    assert cancelled.structured_content["status"] == "cancelled"
    assert sandbox.state.cancels == [submitted.structured_content["request_id"]]
    after = await tool_table.call("check_job", {"job_id": job_id})
    assert after.structured_content["status"] == "cancelled"


async def test_a_failed_job_says_why(tool_table, sandbox):
    sandbox.state.add_fault(outcome="model_error", message="NSFW content detected")
    submitted = await tool_table.call("submit_job", {"tool": "generate_image", "arguments": {"prompt": "x"}})
    with anyio.fail_after(60):  # a hang guard, not a timing assertion
        while True:
            checked = await tool_table.call("check_job", {"job_id": submitted.structured_content["job_id"]})
            if checked.structured_content.get("status") == "failed":
                break
            await anyio.sleep(0.02)
    assert "NSFW content detected" in checked.structured_content["error"]


async def test_invalid_jobs_are_refused_before_anything_is_spent(tool_table, sandbox):
    cases = [
        ({"tool": "generate_image", "arguments": {"num_images": 9}}, "num_images"),
        ({"tool": "check_job", "arguments": {}}, "cannot run as a job"),
        ({"tool": "nope", "arguments": {}}, "Unknown tool"),
        ({}, "tool: Field required"),
        ({"tool": "generate_image", "model": "x"}, "model: Extra inputs are not permitted"),
        (
            {"tool": "run_model", "arguments": {"model": "fal-ai/flux/schnell", "input": {"promt": "x"}}},
            "promt: not an input",
        ),
    ]
    for arguments, expected in cases:
        result = await tool_table.call("submit_job", arguments)
        assert result.is_error and expected in result.content[0].text, result.content[0].text
    assert sandbox.state.submissions == []


async def test_job_ids_are_random_owned_and_forgotten_with_the_job(tool_table, sandbox):
    from fal_mcp.owners import Principal

    submitted = await tool_table.call(
        "submit_job", {"tool": "generate_image", "arguments": {"prompt": "a secret plan"}}
    )
    job_id = submitted.structured_content["job_id"]
    assert job_id.startswith("job_") and len(job_id) < 40 and "secret" not in job_id
    await wait_done(tool_table, job_id)
    stranger = Principal("session:someone-else")
    for tool in ("check_job", "cancel_job"):
        for bad, owner in [(job_id, stranger), (job_id[:-2] + "xx", None), ("job_nonsense", None)]:
            result = await tool_table.call(tool, {"job_id": bad}, **({"owner": owner} if owner else {}))
            assert result.is_error and "job_id: no such job" in result.content[0].text, result.content[0].text
    assert (await tool_table.call("list_jobs", {}, owner=stranger)).structured_content["jobs"] == []
    # forgotten with the job: retention removes finished jobs, and their ids with them
    assert await tool_table.store.prune(max_age=0, per_owner=1000) == 1
    gone = await tool_table.call("check_job", {"job_id": job_id})
    assert gone.is_error and "no such job" in gone.content[0].text
    assert sandbox.state.cancels == []


async def test_outputs_are_listed_and_read_as_resources():
    import base64

    async with stdio_client(["serve", "--sandbox"], server_env()) as client:
        assert listed_outputs(await client.list_resources()) == []
        made = await client.call_tool("generate_image", {"prompt": "resource", "num_images": 2})
        resources = listed_outputs(await client.list_resources())
        assert len(resources) == 2 and all(r.mime_type == "image/jpeg" for r in resources)
        assert str(resources[0].uri).startswith("fal-mcp://outputs/" + made.structured_content["request_id"])
        read = await client.read_resource(resources[0].uri)
        data = base64.b64decode(read.contents[0].blob)
        assert data[:3] == b"\xff\xd8\xff" and len(data) == made.structured_content["files"][0]["file_size"]


async def test_a_video_job_submitted_in_one_process_is_finished_in_another(thread_sandbox, tmp_path):
    """A long video job (the sandbox holds it running until the second process has seen it run)
    submitted to one server process, followed and fetched from another, as across replicas of a
    stateless deployment."""
    thread_sandbox.state.reset()
    thread_sandbox.state.set_config(job_seconds=0.05)
    thread_sandbox.state.add_fault(outcome="hold")
    # replicas share the job store (here one SQLite file; across machines, Redis)
    env = server_env(dict(thread_sandbox.env(), FAL_MCP_STORE=f"sqlite:///{tmp_path}/jobs.sqlite3"))
    arguments = {"prompt": "a slow pan over mountains", "model": "kling.t2v", "duration": 10, "seed": 3}
    try:
        async with stdio_client(["serve"], env) as first:
            submitted = await first.call_tool(
                "submit_job", {"tool": "generate_video", "arguments": arguments}
            )
        job_id = submitted.structured_content["job_id"]
        statuses = set()
        async with stdio_client(["serve"], env, mode="2026-07-28") as second:  # another process
            with anyio.fail_after(60):  # a hang guard, not a timing assertion
                while True:
                    checked = await second.call_tool("check_job", {"job_id": job_id})
                    assert not checked.is_error, checked.content[0].text
                    if checked.content[0].text.startswith("Job done"):
                        break
                    statuses.add(checked.structured_content["status"])
                    if "running" in statuses:
                        thread_sandbox.state.release()
                    await anyio.sleep(0.05)
        assert "running" in statuses
        video = checked.structured_content["files"][0]
        assert video["content_type"] == "video/mp4" and checked.structured_content["endpoint"].endswith(
            "text-to-video"
        )
        assert thread_sandbox.state.submissions[-1]["input"]["duration"] == "10"  # kling reads "5"/"10"
        assert len(thread_sandbox.state.submissions) == 1
    finally:
        thread_sandbox.state.reset()


async def test_a_call_goes_to_the_job_store_three_times_and_all_of_it_is_kept(tool_table, monkeypatch):
    """Each statement is a trip to the store's worker thread, dearer than the statement: a call makes
    three (its job recorded once fal took it, who follows it, its end); its progress and its ledger line
    ride along with the last. Everything is in the store when the call returns."""
    from fal_mcp import store as store_module
    from fal_mcp.owners import STDIO

    monkeypatch.setattr(store_module, "FLUSH_DELAY", 3600.0)  # no timed write during the test
    trips = []
    real_run = store_module.SqliteStore._run

    async def counting(self, work, *args, **kwargs):
        trips.append(work)
        return await real_run(self, work, *args, **kwargs)

    monkeypatch.setattr(store_module.SqliteStore, "_run", counting)
    for prompt in ("first", "second", "third"):  # the first also takes the replica's lease, prunes
        trips.clear()
        result = await tool_table.call("generate_image", {"prompt": prompt})
        assert not result.is_error, result.content[0].text
    assert len(trips) <= 3, trips
    jobs = await tool_table.store.list(STDIO.key)
    assert [(job.status, job.progress) for job in jobs] == [("done", "Done")] * 3
    assert all(job.request_id and job.cost and job.result for job in jobs)
    ledger = await tool_table.store.ledger(STDIO.key, "2000-01-01", "2999-12-31")
    assert sum(row.calls for row in ledger) == 3
