"""Budgets (FAL_MCP_BUDGET_DAILY / FAL_MCP_BUDGET_MONTHLY): never overspent by concurrent calls, even from
two server processes on one Redis; kept across a restart; refusals saying what is left and when it
resets; charges corrected to the receipt, refunded when fal never took the request; one budget per
owner; and the store's charge, adjust, spent, ledger and one-time tokens under concurrency, for both
engines. Amounts in the store are micro-USD, so every figure here is exact."""

from __future__ import annotations

import datetime as dt
import time

import anyio
import httpx
import pytest

from fal_mcp import spending
from fal_mcp.owners import Principal
from fal_mcp.spending import MICRO, resets
from fal_mcp.store import LedgerRow, open_store

from .conftest import http_server, server_env, tool_table_for

pytestmark = pytest.mark.anyio
TOKEN = "budgets-token-0123456789abcdef"
PRO_ID = "fal-ai/flux-pro/v1.1"
# flux_pro: 0.04 USD per megapixel; "square" is 1024x1024 for it.
PRO = {"prompt": "a lighthouse at dusk", "model": "flux_pro", "image_size": "square"}
PRO_COST = round(0.04 * 1024 * 1024)  # micro-USD: 41943
CHEAP = {"prompt": "a lighthouse at dusk", "model": "flux_schnell", "image_size": "square"}  # 3146
# The sandbox draws at most 4096x4096: estimated 25 MP × 0.003 = 0.075 USD, the receipt 16.78 MP.
CLAMPED = {
    "model": "fal-ai/flux/schnell",
    "input": {"prompt": "x", "image_size": {"width": 5000, "height": 5000}},
}
CLAMPED_ESTIMATE, CLAMPED_COST = 75000, 50332


def text_of(result) -> str:
    return result.content[0].text


def usd(micro: int) -> float:
    return micro / MICRO


@pytest.fixture
def on_day(monkeypatch):
    """Fixes the server's UTC day: `on_day(dt.date(...))`."""

    def set_day(day: dt.date) -> None:
        monkeypatch.setattr(spending, "today", lambda: day)

    return set_day


# -- the headline: two servers, one Redis, one budget --------------------------------------------------


def mcp_client(base: str):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    return Client(streamable_http_client(base + "/mcp", http_client=http), mode="legacy")


async def unit_price(env: dict[str, str], endpoint_id: str) -> float:
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(
            env["FAL_MCP_PLATFORM_URL"] + "/models/pricing",
            params={"endpoint_id": endpoint_id},
            headers={"Authorization": f"Key {env['FAL_KEY']}"},
        )
    (price,) = answer.json()["prices"]
    assert price["unit"] == "megapixel"
    return price["unit_price"]


async def test_concurrent_calls_on_two_servers_on_one_redis_never_overspend(thread_sandbox, redis_url):
    state = thread_sandbox.state
    state.reset()
    cost = round(await unit_price(thread_sandbox.env(), PRO_ID) * 1024 * 1024)  # micro-USD per call
    budget = round(5.5 * cost)  # room for 5 calls
    calls = 24
    env = server_env(
        {
            **thread_sandbox.env(),
            "FAL_MCP_AUTH_TOKEN": TOKEN,
            "FAL_MCP_STORE": redis_url,
            "FAL_MCP_BUDGET_DAILY": str(usd(budget)),
            "FAL_MCP_HANDOFF_AFTER": "off",
        }
    )
    days = {spending.today()}
    try:
        with (
            http_server(["--transport", "http"], env) as (_, first),
            http_server(["--transport", "http"], env) as (_, second),
        ):
            async with mcp_client(first) as one, mcp_client(second) as two:
                results = []

                async def call(client) -> None:
                    results.append(await client.call_tool("generate_image", PRO))

                state.add_fault(outcome="hold", times=-1)  # every job fal takes runs until released
                with anyio.fail_after(120):  # a hang guard only
                    async with anyio.create_task_group() as group:
                        for index in range(calls):
                            group.start_soon(call, (one, two)[index % 2])
                        # the refusals come while the calls that got through are still running
                        while len(state.held) < 5 or len(results) < calls - 5:
                            await anyio.sleep(0.02)
                        assert all(r.is_error for r in results) and len(state.held) == 5
                        state.release()
                budgets = [(await c.call_tool("get_budget", {})).structured_content for c in (one, two)]
        days.add(spending.today())
        done = [r for r in results if not r.is_error]
        refused = [text_of(r) for r in results if r.is_error]
        submitted = len(state.submissions)
        assert submitted * cost <= budget
        assert submitted == len(done) == budget // cost == 5 and len(refused) == calls - 5 == 19
        assert all(round(r.structured_content["cost"]["cost"] * MICRO) == cost for r in done)
        left = f"has {usd(budget - 5 * cost):.4f} USD left; it resets at "
        assert all(left in text and "Nothing was submitted" in text for text in refused), refused[0]
        assert all(any(resets("day", day) in text for day in days) for text in refused), refused[0]
        day = budgets[0]["day"]
        assert budgets[0] == budgets[1]
        assert day["spent"] == usd(5 * cost) <= day["limit"] == usd(budget)
        assert day["left"] == pytest.approx(usd(budget - 5 * cost))
    finally:
        state.reset()


# -- in one process ---------------------------------------------------------------------------------------


async def test_the_budget_survives_a_restart_on_sqlite(sandbox, registry, tmp_path):
    settings = {"FAL_MCP_STORE": f"sqlite:///{tmp_path}/jobs.sqlite3", "FAL_MCP_BUDGET_DAILY": 0.1}
    async with tool_table_for(sandbox, registry, **settings) as table:
        for _ in range(2):
            assert not (await table.call("generate_image", PRO)).is_error
    async with tool_table_for(sandbox, registry, **settings) as table:
        status = (await table.call("get_budget", {})).structured_content
        assert status["day"]["spent"] == status["month"]["spent"] == usd(2 * PRO_COST)
        refused = await table.call("generate_image", PRO)
        assert refused.is_error and f"has {usd(100000 - 2 * PRO_COST):.4f} USD left" in text_of(refused)
        assert len(sandbox.state.submissions) == 2
        assert not (await table.call("generate_image", CHEAP)).is_error  # the remainder is still there
    assert len(sandbox.state.submissions) == 3


@pytest.mark.parametrize(
    ("day", "next_day", "next_month"),
    [
        (dt.date(2024, 12, 31), "2025-01-01", "2025-01-01"),
        (dt.date(2024, 2, 28), "2024-02-29", "2024-03-01"),
        (dt.date(2025, 1, 31), "2025-02-01", "2025-02-01"),
    ],
)
async def test_a_refusal_says_what_is_left_and_when_it_resets(
    sandbox, registry, on_day, day, next_day, next_month
):
    on_day(day)
    async with tool_table_for(sandbox, registry, FAL_MCP_BUDGET_DAILY=0.1) as table:
        assert not (await table.call("generate_image", PRO)).is_error
        assert not (await table.call("generate_image", PRO)).is_error
        refused = await table.call("generate_image", PRO)
        status = (await table.call("get_budget", {})).structured_content
    assert refused.is_error and text_of(refused) == (
        f"{PRO_ID} was not run: it would cost about 0.0419 USD and your daily budget "
        f"(FAL_MCP_BUDGET_DAILY=0.1 USD) has 0.0161 USD left; it resets at {next_day} 00:00 UTC. "
        "Nothing was submitted."
    )
    assert status["day"] == {
        "limit": 0.1,
        "spent": usd(2 * PRO_COST),
        "left": usd(100000 - 2 * PRO_COST),
        "resets": f"{next_day} 00:00 UTC",
    }
    assert status["month"] == {
        "limit": None,
        "spent": usd(2 * PRO_COST),
        "left": None,
        "resets": f"{next_month} 00:00 UTC",
    }
    assert len(sandbox.state.submissions) == 2


async def test_a_monthly_budget_alone_counts_every_day_of_the_month(sandbox, registry, on_day):
    async with tool_table_for(sandbox, registry, FAL_MCP_BUDGET_MONTHLY=0.1) as table:
        on_day(dt.date(2025, 11, 30))  # last month: not counted
        assert not (await table.call("generate_image", PRO)).is_error
        on_day(dt.date(2025, 12, 1))
        assert not (await table.call("generate_image", PRO)).is_error
        on_day(dt.date(2025, 12, 31))
        assert not (await table.call("generate_image", PRO)).is_error
        refused = await table.call("generate_image", PRO)
        status = (await table.call("get_budget", {})).structured_content
    assert refused.is_error and (
        "your monthly budget (FAL_MCP_BUDGET_MONTHLY=0.1 USD) has 0.0161 USD left; it resets at "
        "2026-01-01 00:00 UTC. Nothing was submitted." in text_of(refused)
    ), text_of(refused)
    assert status["day"] == {
        "limit": None,
        "spent": usd(PRO_COST),
        "left": None,
        "resets": "2026-01-01 00:00 UTC",
    }
    assert status["month"]["spent"] == usd(2 * PRO_COST) and status["month"]["limit"] == 0.1
    assert len(sandbox.state.submissions) == 3


async def test_the_charge_is_corrected_to_the_receipt(sandbox, registry, on_day):
    on_day(dt.date(2025, 6, 15))
    # 0.1 USD: the clamped call's estimate (0.075) and a flux_pro call (0.0419) would not both fit;
    # its receipt (0.0503) and the flux_pro call do.
    async with tool_table_for(sandbox, registry, FAL_MCP_BUDGET_DAILY=0.1) as table:
        clamped = await table.call("run_model", CLAMPED)
        pro = await table.call("generate_image", PRO)
        receipts = [r.structured_content["cost"] for r in (clamped, pro)]
        status = (await table.call("get_budget", {})).structured_content
        ledger = await table.store.ledger("stdio", "2025-06-15", "2025-06-15")
    assert not pro.is_error, text_of(pro)
    assert [(r["estimate"], r["cost"]) for r in receipts] == [
        (usd(CLAMPED_ESTIMATE), usd(CLAMPED_COST)),
        (usd(PRO_COST), usd(PRO_COST)),
    ]
    assert (
        status["day"]["spent"] == round(sum(r["cost"] for r in receipts), 6) == usd(CLAMPED_COST + PRO_COST)
    )
    assert ledger == [
        LedgerRow("2025-06-15", PRO_ID, 1, PRO_COST, PRO_COST),
        LedgerRow("2025-06-15", "fal-ai/flux/schnell", 1, CLAMPED_ESTIMATE, CLAMPED_COST),
    ]


async def test_each_owner_has_a_budget_of_their_own(sandbox, registry):
    alice, bob = Principal("token:a"), Principal("token:b")
    async with tool_table_for(sandbox, registry, FAL_MCP_BUDGET_DAILY=0.05) as table:
        assert not (await table.call("generate_image", PRO, owner=alice)).is_error
        assert (await table.call("generate_image", PRO, owner=alice)).is_error
        assert not (await table.call("generate_image", PRO, owner=bob)).is_error
        assert not (await table.call("generate_image", CHEAP, owner=bob)).is_error
        spent = {
            who.key: (await table.call("get_budget", {}, owner=who)).structured_content["day"]["spent"]
            for who in (alice, bob, Principal("token:c"))
        }
    assert spent == {"token:a": usd(PRO_COST), "token:b": usd(PRO_COST + 3146), "token:c": 0.0}
    assert len(sandbox.state.submissions) == 3


@pytest.mark.parametrize("status", [400, 503])
async def test_a_call_fal_never_accepted_is_refunded(sandbox, registry, status):
    sandbox.state.add_fault(route="submit", status=status, times=-1)
    async with tool_table_for(sandbox, registry, FAL_MCP_BUDGET_DAILY=0.05, FAL_MCP_MAX_RETRIES=1) as table:
        for _ in range(3):  # each would use up the budget if it stayed charged
            failed = await table.call("generate_image", PRO)
            assert failed.is_error and "budget" not in text_of(failed), text_of(failed)
        assert (await table.call("get_budget", {})).structured_content["day"]["spent"] == 0
        sandbox.state.faults.clear()
        assert not (await table.call("generate_image", PRO)).is_error
    assert len(sandbox.state.submissions) == 1


async def test_a_submit_whose_outcome_is_unknown_stays_charged(sandbox, registry):
    """fal answered 500 to the submit: it may have taken the job (and be running it, paid for), so the
    estimate stays charged and the next call finds the budget used."""
    sandbox.state.add_fault(route="submit", status=500, times=1)
    async with tool_table_for(sandbox, registry, FAL_MCP_BUDGET_DAILY=0.05) as table:
        failed = await table.call("generate_image", PRO)
        assert failed.is_error and "500" in text_of(failed), text_of(failed)
        assert (await table.call("get_budget", {})).structured_content["day"]["spent"] == usd(PRO_COST)
        refused = await table.call("generate_image", PRO)
        assert refused.is_error and "left" in text_of(refused), text_of(refused)
    assert sandbox.state.submissions == []


# -- the store itself, both engines --------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
async def stores(request, tmp_path):
    """Two stores on one database (as two replicas have): a SQLite file, or a Redis database."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
    else:
        url = f"sqlite:///{tmp_path}/jobs.sqlite3"
    opened = [open_store(url), open_store(url)]
    try:
        yield opened
    finally:
        for store in opened:
            await store.aclose()


async def test_concurrent_charges_never_pass_the_limit(stores):
    refusals: list = []

    async def charge(index: int) -> None:
        over = await stores[index % 2].charge(
            "alice", "2025-03-10", "fal-ai/x", 7, {"day": 100, "month": 1000}
        )
        if over is not None:
            refusals.append(over)

    with anyio.fail_after(60):  # a hang guard only
        async with anyio.create_task_group() as group:
            for index in range(50):
                group.start_soon(charge, index)
    assert len(refusals) == 50 - 14 and all(period == "day" and spent == 98 for period, spent in refusals)
    assert await stores[0].spent("alice", "2025-03-10") == {"day": 98, "month": 98}
    # the month's limit too, over several days
    assert await stores[1].charge("alice", "2025-03-11", "fal-ai/x", 3, {"month": 102}) is None
    assert await stores[0].charge("alice", "2025-03-12", "fal-ai/x", 3, {"month": 102}) == ("month", 101)
    assert await stores[0].spent("alice", "2025-03-12") == {"day": 0, "month": 101}


async def test_adjust_spent_and_ledger_round_trip(stores):
    first, second = stores
    assert await first.charge("alice", "2025-03-30", "fal-ai/a", 500, {"day": 10_000}) is None
    assert await first.charge("alice", "2025-03-31", "fal-ai/a", 400, {"day": 10_000}) is None
    assert await second.charge("alice", "2025-03-31", "fal-ai/b", 300, {}) is None
    await second.adjust("alice", "2025-03-31", "fal-ai/a", charged=-150)  # the receipt: 250
    await first.adjust("alice", "2025-03-31", "fal-ai/b", charged=-300, estimated=-300, calls=-1)  # a refund
    await first.adjust("alice", "2025-04-01", "fal-ai/a", charged=20, estimated=10, calls=1)  # no limit set
    await first.charge("bob", "2025-03-31", "fal-ai/a", 999, {})
    assert await second.spent("alice", "2025-03-31") == {"day": 250, "month": 750}
    assert await second.spent("alice", "2025-04-01") == {"day": 20, "month": 20}
    assert await second.spent("carol", "2025-03-31") == {"day": 0, "month": 0}
    assert await second.ledger("alice", "2025-03-30", "2025-04-01") == [
        LedgerRow("2025-03-30", "fal-ai/a", 1, 500, 500),
        LedgerRow("2025-03-31", "fal-ai/a", 1, 400, 250),
        LedgerRow("2025-03-31", "fal-ai/b", 0, 0, 0),
        LedgerRow("2025-04-01", "fal-ai/a", 1, 10, 20),
    ]
    assert await first.ledger("alice", "2025-03-31", "2025-03-31") == [
        LedgerRow("2025-03-31", "fal-ai/a", 1, 400, 250),
        LedgerRow("2025-03-31", "fal-ai/b", 0, 0, 0),
    ]
    assert await first.ledger("bob", "2025-03-30", "2025-03-30") == []


async def test_a_token_is_taken_once_and_only_by_its_binding(stores):
    first, second = stores
    await first.put_token("fcf_once", "binding-a", time.time() + 60)
    taken: list[bool] = []

    async def take(index: int) -> None:
        taken.append(await stores[index % 2].take_token("fcf_once", "binding-a"))

    async with anyio.create_task_group() as group:
        for index in range(20):
            group.start_soon(take, index)
    assert sorted(taken) == [False] * 19 + [True]
    await second.put_token("fcf_bound", "binding-a", time.time() + 60)
    assert await first.take_token("fcf_bound", "binding-b") is False
    assert await first.take_token("fcf_bound", "binding-a") is True  # the wrong one did not use it up
    assert await first.take_token("fcf_unknown", "binding-a") is False
    await first.put_token("fcf_short", "binding-a", time.time() + 0.05)
    await anyio.sleep(0.3)  # past its expiry
    assert await second.take_token("fcf_short", "binding-a") is False
