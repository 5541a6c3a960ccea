"""get_usage: what the account used and spent, per endpoint, from fal's usage API (admin key), beside
this server's own ledger of what the caller spent through it, per day and endpoint (any key)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fal_mcp import Tool, ToolContext, ToolError, ToolHints, ToolInput, ToolResult

from .catalog import resolve_endpoints

DEFAULT_DAYS = 7
MAX_PAGES = 50


class GetUsageInput(ToolInput):
    start: dt.date | None = Field(None, description="Default: 7 days before end")
    end: dt.date | None = Field(None, description="Inclusive; default today")
    models: list[str] | None = Field(None, max_length=50)

    @model_validator(mode="after")
    def start_before_end(self):
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start ({self.start}) is after end ({self.end})")
        return self


class EndpointUsage(BaseModel):
    model_config = ConfigDict(defer_build=True)

    endpoint_id: str
    unit: str
    quantity: float
    unit_price: float
    cost: float


class LedgerLine(BaseModel):
    model_config = ConfigDict(defer_build=True)

    day: str
    endpoint_id: str
    calls: int
    estimated: float = Field(description="USD estimated before submitting")
    cost: float = Field(description="USD from the receipts (a job still running counts its estimate)")


class Usage(BaseModel):
    model_config = ConfigDict(defer_build=True)

    start: str
    end: str
    usage: list[EndpointUsage] = Field(description="fal's account-wide usage (every client of the key)")
    total_cost: float
    currency: str = "USD"
    ledger: list[LedgerLine] = Field(
        default_factory=list, description="What you spent through this server, per day and endpoint"
    )
    ledger_cost: float = 0.0
    note: str | None = Field(None, description="Why fal's account-wide usage is missing, if it is")


async def get_usage(args: GetUsageInput, ctx: ToolContext) -> ToolResult:
    end = args.end or dt.datetime.now(dt.timezone.utc).date()
    start = args.start or end - dt.timedelta(days=DEFAULT_DAYS)
    params = [
        ("start", f"{start.isoformat()}T00:00:00Z"),
        ("end", f"{(end + dt.timedelta(days=1)).isoformat()}T00:00:00Z"),
        ("expand", "summary"),
    ]
    wanted = sorted(
        {endpoint_id for name in args.models or () for _, endpoint_id in resolve_endpoints(ctx, name)}
    )
    params += [("endpoint_id", endpoint_id) for endpoint_id in wanted]
    ledger = [
        LedgerLine(**line)
        for line in await ctx.ledger(start.isoformat(), end.isoformat())
        if not wanted or line["endpoint_id"] in wanted
    ]
    ledger_cost = round(sum(line.cost for line in ledger), 6)
    note = None
    try:
        usage = await _fal_usage(ctx, params)
    except ToolError as exc:
        if exc.status != 403:
            raise
        usage = []
        note = (
            "fal's account-wide usage needs an admin API key: create one at https://fal.ai/dashboard/keys "
            f"and set FAL_KEY to it. ({exc})"
        )
    total = round(sum(row.cost for row in usage), 6)
    result = Usage(
        start=start.isoformat(),
        end=end.isoformat(),
        usage=usage,
        total_cost=total,
        ledger=ledger,
        ledger_cost=ledger_cost,
        note=note,
    )
    lines = [f"Through this server, {start} to {end}: {ledger_cost:.4f} USD"]
    lines += [
        f"- {line.day} {line.endpoint_id}: {line.calls} call(s), {line.cost:.4f} USD "
        f"(estimated {line.estimated:.4f})"
        for line in ledger
    ]
    if note:
        lines.append(note)
    else:
        lines.append(f"The fal account, {start} to {end}: total {total:.4f} USD")
        lines += [
            f"- {row.endpoint_id}: {row.quantity:g} {row.unit} x {row.unit_price:g} = {row.cost:.4f} USD"
            for row in usage
        ]
        if not usage:
            lines.append("No usage in this period.")
    return ToolResult("\n".join(lines), result)


async def _fal_usage(ctx: ToolContext, params: list[tuple[str, str]]) -> list[EndpointUsage]:
    # The usage API has no total: cost is quantity x unit_price per summary row, summed.
    rows: dict[tuple[str, str, float], float] = {}
    cursor = None
    for _ in range(MAX_PAGES):
        page = await ctx.platform(
            "GET", "/models/usage", params=params + ([("cursor", cursor)] if cursor else [])
        )
        for item in page.get("summary") or []:
            key = (item["endpoint_id"], item.get("unit", ""), float(item.get("unit_price", 0)))
            rows[key] = rows.get(key, 0) + float(item.get("quantity", 0))
        cursor = page.get("next_cursor")
        if not page.get("has_more") or not cursor:
            break
    return sorted(
        (
            EndpointUsage(endpoint_id=e, unit=u, quantity=q, unit_price=p, cost=round(q * p, 6))
            for (e, u, p), q in rows.items()
        ),
        key=lambda row: -row.cost,
    )


TOOL = Tool(
    name="get_usage",
    title="Get usage",
    description="Your spending per day and endpoint, and the fal account's usage (admin key).",
    input_model=GetUsageInput,
    handler=get_usage,
    output_model=Usage,
    hints=ToolHints(read_only=True, idempotent=True),
    category="utility",
)
