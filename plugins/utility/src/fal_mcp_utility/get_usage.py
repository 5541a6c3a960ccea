"""get_usage: what the account used and spent, per endpoint, from fal's usage API (admin key)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field, model_validator

from fal_mcp import Tool, ToolContext, ToolError, ToolHints, ToolInput, ToolResult

from .catalog import resolve_endpoints

DEFAULT_DAYS = 7
MAX_PAGES = 50


class GetUsageInput(ToolInput):
    start: dt.date | None = Field(None, description="First day (YYYY-MM-DD); default 7 days before end")
    end: dt.date | None = Field(None, description="Last day, inclusive (YYYY-MM-DD); default today (UTC)")
    models: list[str] | None = Field(None, max_length=50, description="Only these aliases or endpoint ids")

    @model_validator(mode="after")
    def start_before_end(self):
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start ({self.start}) is after end ({self.end})")
        return self


class EndpointUsage(BaseModel):
    endpoint_id: str
    unit: str
    quantity: float
    unit_price: float
    cost: float


class Usage(BaseModel):
    start: str
    end: str
    usage: list[EndpointUsage]
    total_cost: float
    currency: str = "USD"


async def get_usage(args: GetUsageInput, ctx: ToolContext) -> ToolResult:
    end = args.end or dt.datetime.now(dt.timezone.utc).date()
    start = args.start or end - dt.timedelta(days=DEFAULT_DAYS)
    params = [
        ("start", f"{start.isoformat()}T00:00:00Z"),
        ("end", f"{(end + dt.timedelta(days=1)).isoformat()}T00:00:00Z"),
        ("expand", "summary"),
    ]
    for name in args.models or ():
        params += [("endpoint_id", endpoint_id) for _, endpoint_id in resolve_endpoints(ctx, name)]
    # The usage API has no total: cost is quantity x unit_price per summary row, summed.
    rows: dict[tuple[str, str, float], float] = {}
    cursor = None
    try:
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
    except ToolError as exc:
        if exc.status == 403:
            raise ToolError(
                "Reading usage needs an admin API key: create one at https://fal.ai/dashboard/keys "
                f"and set FAL_KEY to it. ({exc})"
            ) from None
        raise
    usage = sorted(
        (
            EndpointUsage(endpoint_id=e, unit=u, quantity=q, unit_price=p, cost=round(q * p, 6))
            for (e, u, p), q in rows.items()
        ),
        key=lambda row: -row.cost,
    )
    total = round(sum(row.cost for row in usage), 6)
    result = Usage(start=start.isoformat(), end=end.isoformat(), usage=usage, total_cost=total)
    lines = [f"Usage {start} to {end}: total {total:.4f} USD"]
    lines += [
        f"- {row.endpoint_id}: {row.quantity:g} {row.unit} x {row.unit_price:g} = {row.cost:.4f} USD"
        for row in usage
    ]
    if not usage:
        lines.append("No usage in this period.")
    return ToolResult("\n".join(lines), result)


TOOL = Tool(
    name="get_usage",
    title="Get usage",
    description="What the fal.ai account used and spent between two dates (default: the last 7 days), per "
    "endpoint (quantity x unit price) and in total. Needs an admin API key.",
    input_model=GetUsageInput,
    handler=get_usage,
    output_model=Usage,
    hints=ToolHints(read_only=True, idempotent=True),
    category="utility",
)
