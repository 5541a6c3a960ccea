"""Spending the user's money only with consent: limits, confirmation, budgets and receipts.

Every fal request a tool makes passes `approve` before it is submitted (ToolContext.run):

1. its estimate: units × fal's unit price, for this very input (budget.py);
2. FAL_MCP_MAX_COST_PER_CALL: above it, refused;
3. FAL_MCP_CONFIRM_ABOVE: above it, the user is asked. Through MCP elicitation where the client can be
   asked (the SDK's resolver: `elicitation/create` mid-call for 2025-era clients, an input-required
   result for 2026-era ones); otherwise the call is refused with a one-time token bound to this call
   (tool, arguments, owner), which the same call with `confirm: <token>` added spends;
4. FAL_MCP_BUDGET_DAILY / FAL_MCP_BUDGET_MONTHLY: the estimate is charged to the owner's spending in
   the job store, checked and charged in one atomic step, so budgets hold across replicas and restarts.

Where a limit is set and no estimate can be had, the call is refused (fail closed). Once fal has
answered, `settle` makes the receipt: the units the output actually has × the unit price, and corrects
the charge to it. A request fal never accepted is refunded; one it accepted stays charged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .budget import UNIT_KINDS, Estimate, EstimateError
from .errors import ToolError
from .outputs import OutputFile, Receipt, ToolInput, find_files
from .types import Tool, ToolHints, ToolResult

if TYPE_CHECKING:
    from .context import ToolContext
    from .store import JobStore

log = logging.getLogger(__name__)
MICRO = 1_000_000  # amounts in the store are integers of micro-USD
TOKEN_PREFIX = "fcf_"

Answer = Literal["accept", "decline", "cancel"]
# Asks the user of the waiting request; None when this client cannot be asked (then: the token path).
Asker = Callable[["Question"], Awaitable[Answer]]


class NeedsInput(Exception):  # noqa: N818 (not an error: the call's answer is a question)
    """The call's answer is a question for the client (a 2026-era input-required result): raised where
    the question is asked, it ends the call before anything is submitted; the client calls again with
    the answer."""

    def __init__(self, result: Any) -> None:
        super().__init__("the user's answer is needed")
        self.result = result


class Consent(BaseModel):
    model_config = ConfigDict(defer_build=True)

    confirm: bool = Field(True, title="Spend it", description="Run the call and spend this amount")


@dataclass(frozen=True)
class Question:
    tool: str
    endpoint_id: str
    estimate: Estimate
    what: str  # what will be made, e.g. the prompt

    @property
    def message(self) -> str:
        return (
            f"{self.tool} with {self.endpoint_id} will cost about {self.estimate.cost:.4f} "
            f"{self.estimate.currency}: {self.estimate.describe()}. {self.what} Spend it?"
        )


@dataclass
class Spend:
    """One fal request's estimate and what was charged for it (kept in its job record, to settle it
    after a restart or on another replica)."""

    endpoint_id: str
    owner: str
    estimate: Estimate | None
    day: str = ""  # the UTC day it is charged to; "" if nothing was charged
    charged: int = 0  # micro-USD

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "estimate": asdict(self.estimate) if self.estimate else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Spend:
        estimate = Estimate(**data["estimate"]) if data.get("estimate") else None
        return cls(data["endpoint_id"], data["owner"], estimate, data.get("day", ""), data.get("charged", 0))


def may_spend(tool) -> bool:
    """Tools that may start fal requests, as far as the core can tell: those that neither only read nor
    destroy (cancel_job). They take `confirm` when a confirmation threshold is set."""
    return not tool.hints.read_only and not tool.hints.destructive


def limits_set(settings) -> bool:
    return any(
        value is not None
        for value in (
            settings.max_cost_per_call,
            settings.confirm_above,
            settings.budget_daily,
            settings.budget_monthly,
        )
    )


def today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def resets(period: str, day: dt.date) -> str:
    """When a day's or a month's budget starts again, in UTC."""
    if period == "day":
        start = day + dt.timedelta(days=1)
    else:
        start = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
    return f"{start.isoformat()} 00:00 UTC"


def budget_limits(settings) -> dict[str, int]:
    limits = {"day": settings.budget_daily, "month": settings.budget_monthly}
    return {period: round(limit * MICRO) for period, limit in limits.items() if limit is not None}


def binding(owner: str, tool: str, arguments: Mapping[str, Any]) -> str:
    """What a confirmation token is bound to: this owner calling this tool with exactly these arguments."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{owner}\0{tool}\0{canonical}".encode()).hexdigest()


def _what(context: ToolContext) -> str:
    prompt = getattr(context.arguments, "prompt", None)
    if isinstance(prompt, str) and prompt.strip():
        shown = prompt if len(prompt) <= 200 else prompt[:200] + "..."
        return f"Prompt: {shown!r}."
    return ""


async def approve(context: ToolContext, endpoint_id: str, arguments: dict[str, Any]) -> Spend:
    """Everything that must hold before `arguments` are submitted to `endpoint_id` (see the module's
    doc). Raises ToolError (refused) saying why and what to do, or NeedsInput; charges the budget."""
    settings = context.settings
    spend = Spend(endpoint_id, context.owner.key, None)
    if not limits_set(settings):
        return spend  # nothing to check: the receipt is made after the job, without delaying it
    from .budget import estimate

    try:
        spend.estimate = found = await estimate(context.gateway, endpoint_id, arguments, context.fal_key)
    except EstimateError as exc:
        raise ToolError(
            f"{endpoint_id} was not run: a spending limit is set and its cost could not be estimated: {exc}. "
            "Nothing was submitted.",
            kind="refused",
        ) from None
    limit = settings.max_cost_per_call
    if limit is not None and found.cost > limit:
        raise ToolError(
            f"{endpoint_id} was not run: it would cost about {found.describe()}, more than "
            f"FAL_MCP_MAX_COST_PER_CALL={limit:g}. Nothing was submitted.",
            kind="refused",
        )
    limits, day = budget_limits(settings), today()
    amount = round(found.cost * MICRO)
    store = _store(context) if limits else None
    if settings.confirm_above is not None and found.cost > settings.confirm_above:
        if store is not None:  # never ask the user for what the budget refuses anyway
            spent = await store.spent(context.owner.key, day.isoformat())
            for period, cap in limits.items():
                if spent[period] + amount > cap:
                    raise _over_budget(endpoint_id, found, period, spent[period], limits[period], day)
        await _consent(context, Question(context.tool.name, endpoint_id, found, _what(context)))
    if store is not None:
        over = await store.charge(context.owner.key, day.isoformat(), endpoint_id, amount, limits)
        if over is not None:
            period, spent_then = over
            raise _over_budget(endpoint_id, found, period, spent_then, limits[period], day)
        spend.day, spend.charged = day.isoformat(), amount
    return spend


def _over_budget(
    endpoint_id: str, found: Estimate, period: str, spent: int, limit: int, day: dt.date
) -> ToolError:
    left = max(0, limit - spent) / MICRO
    variable = "FAL_MCP_BUDGET_DAILY" if period == "day" else "FAL_MCP_BUDGET_MONTHLY"
    return ToolError(
        f"{endpoint_id} was not run: it would cost about {found.cost:.4f} USD and your "
        f"{'daily' if period == 'day' else 'monthly'} budget ({variable}={limit / MICRO:g} USD) has "
        f"{left:.4f} USD left; it resets at {resets(period, day)}. Nothing was submitted.",
        kind="refused",
    )


def _store(context: ToolContext) -> JobStore:
    if context.table is None:  # a context made outside a server: budgets need the job store
        raise ToolError("spending budgets need the server's job store", kind="refused")
    return context.table.store


async def _consent(context: ToolContext, question: Question) -> None:
    """The user's consent to this call's spending, once per call: asked, or shown by a token."""
    call = context.call
    if call is not None and call.consented:
        return
    token = context.confirm_token
    if token:
        bound = binding(context.owner.key, context.tool.name, context.client_arguments)
        if not await _store(context).take_token(token, bound):
            raise ToolError(
                f"{question.endpoint_id} was not run: confirm: this token is not valid for this call (it "
                "was made for other arguments, another tool or another client, has expired, or was used "
                "already). Call again without confirm to get a new one. Nothing was submitted.",
                kind="refused",
            )
    else:
        asker = call.asker if call is not None else None
        answer = await asker(question) if asker is not None else None
        if answer is None:
            raise await _refusal_with_token(context, question)
        if answer != "accept":
            word = "declined" if answer == "decline" else "cancelled"
            raise ToolError(
                f"{question.endpoint_id} was not run: the user {word} spending about "
                f"{question.estimate.cost:.4f} {question.estimate.currency}. Nothing was submitted.",
                kind="cancelled" if answer == "cancel" else "refused",
            )
    if call is not None:
        call.consented = True


async def _refusal_with_token(context: ToolContext, question: Question) -> ToolError:
    settings = context.settings
    token = TOKEN_PREFIX + secrets.token_urlsafe(16)
    bound = binding(context.owner.key, context.tool.name, context.client_arguments)
    await _store(context).put_token(token, bound, time.time() + settings.confirm_ttl)
    return ToolError(
        f"{question.tool} was not run: it would cost about {question.estimate.cost:.4f} "
        f"{question.estimate.currency} ({question.estimate.describe()}), more than "
        f"FAL_MCP_CONFIRM_ABOVE={settings.confirm_above:g}, so the user must agree first. Ask the user; "
        f'if they agree, call {question.tool} again with the same arguments and "confirm": "{token}" '
        f"added (valid once, for {settings.confirm_ttl / 60:g} minutes). Nothing was submitted.",
        kind="refused",
    )


async def refund(store: JobStore, spend: Spend) -> None:
    """Give back a charge for a request fal never accepted."""
    if spend.charged:
        await store.adjust(
            spend.owner,
            spend.day,
            spend.endpoint_id,
            charged=-spend.charged,
            estimated=-spend.charged,
            calls=-1,
        )


async def settle_call(context: ToolContext, output_files: list[OutputFile] | None) -> Receipt | None:
    """The receipt of a call's fal requests, once the call ended (its output files, if it made any),
    with each charge corrected to it (or, with no limits set, the use added to the ledger). None if
    nothing was spent, or fal's price cannot be had."""
    receipts = []
    spent, context.spent = context.spent, []
    for spend, arguments, data in spent:
        receipt = await _settle(context, spend, arguments, data, output_files if len(spent) == 1 else None)
        if receipt is not None:
            receipts.append(receipt)
    return combined(receipts)


async def _settle(
    context: ToolContext,
    spend: Spend,
    arguments: Mapping[str, Any],
    data: Any,
    output_files: list[OutputFile] | None,
) -> Receipt | None:
    from .budget import estimate
    from .fal_keys import KeyRefused

    found = spend.estimate
    if found is None:
        try:
            found = await estimate(context.gateway, spend.endpoint_id, arguments, context.fal_key)
        except (EstimateError, KeyRefused) as exc:
            log.info("no receipt for %s: %s", spend.endpoint_id, exc)
            return None
    receipt = receipt_for(found, find_files(data), output_files or [])
    if context.table is not None:
        cost = round(receipt.cost * MICRO)
        store = context.table.store
        try:
            if spend.day:
                await store.adjust(spend.owner, spend.day, spend.endpoint_id, charged=cost - spend.charged)
            else:
                day = today().isoformat()
                estimated = round(found.cost * MICRO)
                await store.adjust(
                    spend.owner, day, spend.endpoint_id, charged=cost, estimated=estimated, calls=1
                )
        except Exception as exc:  # the ledger can miss a line; the result must not be lost for it
            log.warning("could not record the cost of %s in the ledger: %s", spend.endpoint_id, exc)
    return receipt


def receipt_for(found: Estimate, fal_files: list[OutputFile], output_files: list[OutputFile]) -> Receipt:
    """The units the output has × the unit price: measured on what fal returned (what it bills), else on
    what the tool made of it (a length the tool read from the file), else the estimate's units, marked
    estimated."""
    kind = UNIT_KINDS.get(found.unit.strip().lower())
    measured = (
        None
        if found.historical
        else _measure(kind, found.unit, fal_files) or _measure(kind, found.unit, output_files)
    )
    units, basis = measured or (found.units, found.basis)
    return Receipt(
        estimate=round(found.cost, 6),
        cost=round(units * found.unit_price, 6),
        units=round(units, 6),
        unit=found.unit,
        unit_price=found.unit_price,
        basis=basis,
        estimated=measured is None,
    )


def _measure(kind: str | None, unit: str, files: list[OutputFile]) -> tuple[float, str] | None:
    """(units, what was counted) in these files, if they tell."""
    if kind == "count" and unit.lower().rstrip("s") not in ("image", "video"):
        return (1.0, f"1 {unit}") if files else None  # priced per request: one request
    if not files:
        return None
    if kind == "count":
        return float(len(files)), f"{len(files)} {unit}"
    if kind == "megapixel" and all(f.width and f.height for f in files):
        megapixels = sum((f.width or 0) * (f.height or 0) for f in files) / 1_000_000
        sizes = sorted({f"{f.width}x{f.height}" for f in files})
        shown = f"{len(files)} × {sizes[0]}" if len(sizes) == 1 else ", ".join(sizes)
        return megapixels, f"{shown} ({megapixels:.2f} megapixels)"
    if kind in ("second", "minute") and all(f.duration for f in files):
        seconds = sum(f.duration or 0 for f in files)
        return (seconds if kind == "second" else seconds / 60), f"{seconds:g} s of output"
    return None


def combined(receipts: list[Receipt]) -> Receipt | None:
    """One receipt for a call that made several fal requests."""
    if len(receipts) <= 1:
        return receipts[0] if receipts else None
    units = {r.unit for r in receipts}
    return Receipt(
        estimate=round(sum(r.estimate for r in receipts), 6),
        cost=round(sum(r.cost for r in receipts), 6),
        units=sum(r.units for r in receipts) if len(units) == 1 else float(len(receipts)),
        unit=units.pop() if len(units) == 1 else "request",
        unit_price=receipts[0].unit_price if len({r.unit_price for r in receipts}) == 1 else 0.0,
        basis="; ".join(r.basis for r in receipts),
        estimated=any(r.estimated for r in receipts),
    )


def describe(receipt: Receipt) -> str:
    label = " (estimated)" if receipt.estimated else ""
    return (
        f"Cost: {receipt.cost:.4f} USD{label} = {receipt.units:g} {receipt.unit} × {receipt.unit_price:g} "
        f"({receipt.basis}); estimated before: {receipt.estimate:.4f} USD."
    )


# -- asking through the SDK's resolver -------------------------------------------------------------------


def asker_for(request_context: Any, params: Any) -> Asker | None:
    """How to ask the user of this tools/call request, or None if its client cannot be asked: it did
    not declare form elicitation, or it is a 2025-era request on a stateless connection (no way back)."""
    from mcp_types.version import is_version_at_least

    capabilities = request_context.session.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return None
    version = request_context.protocol_version
    modern = version is not None and is_version_at_least(version, "2026-07-28")
    if not modern and not request_context.session.can_send_request:
        return None

    async def ask(question: Question) -> Answer:
        from mcp.server.mcpserver.context import Context
        from mcp.server.mcpserver.resolve import Elicit, Resolve, build_resolver_plans, resolve_arguments
        from mcp_types import InputRequiredResult

        def confirm_spending() -> Elicit[Consent]:
            return Elicit(question.message, Consent)

        wanted = {"consent": (Resolve(confirm_spending), True)}
        context = Context(request_context=request_context, input_params=params)
        outcome = await resolve_arguments(wanted, build_resolver_plans(wanted, set()), {}, context)
        if isinstance(outcome, InputRequiredResult):
            raise NeedsInput(outcome)
        answer = outcome["consent"]
        if answer.action == "accept":
            return "accept" if answer.data.confirm else "decline"
        return answer.action

    return ask


async def budget_status(context: ToolContext) -> dict[str, Any]:
    """The caller's budgets: limit, spent, left and reset of each period set."""
    settings = context.settings
    day = today()
    spent = await _store(context).spent(context.owner.key, day.isoformat())
    periods = {}
    for period, limit in (("day", settings.budget_daily), ("month", settings.budget_monthly)):
        used = spent[period] / MICRO
        periods[period] = {
            "limit": limit,
            "spent": round(used, 6),
            "left": round(max(0.0, limit - used), 6) if limit is not None else None,
            "resets": resets(period, day),
        }
    return periods


# -- the get_budget tool ---------------------------------------------------------------------------------


class Period(BaseModel):
    model_config = ConfigDict(defer_build=True)

    limit: float | None = Field(description="USD; null: no limit set")
    spent: float = Field(description="USD spent in this period (jobs still running count their estimate)")
    left: float | None = None
    resets: str = Field(description="When the period starts again (UTC)")


class BudgetStatus(BaseModel):
    model_config = ConfigDict(defer_build=True)

    day: Period
    month: Period
    confirm_above: float | None = Field(None, description="USD per call above which the user is asked")
    max_cost_per_call: float | None = None


class NoInput(ToolInput):
    pass


async def get_budget(args: NoInput, context: ToolContext) -> ToolResult:
    periods = await budget_status(context)
    status = BudgetStatus(
        day=Period(**periods["day"]),
        month=Period(**periods["month"]),
        confirm_above=context.settings.confirm_above,
        max_cost_per_call=context.settings.max_cost_per_call,
    )
    lines = []
    for name, period in (("Today", status.day), ("This month", status.month)):
        if period.limit is None:
            lines.append(f"{name}: {period.spent:.4f} USD spent; no budget set.")
        else:
            lines.append(
                f"{name}: {period.spent:.4f} of {period.limit:g} USD spent, {period.left:.4f} USD left; "
                f"resets at {period.resets}."
            )
    if status.confirm_above is not None:
        lines.append(f"Calls estimated above {status.confirm_above:g} USD ask you first.")
    if status.max_cost_per_call is not None:
        lines.append(f"Calls estimated above {status.max_cost_per_call:g} USD are refused.")
    return ToolResult("\n".join(lines), status)


TOOLS = [
    Tool(
        "get_budget",
        "Your spending budget",
        "Your spending today and this month, and the budgets and limits set.",
        NoInput,
        get_budget,
        output_model=BudgetStatus,
        hints=ToolHints(read_only=True, idempotent=True),
        category="utility",
    )
]
