"""get_pricing: what models cost, live from fal's pricing API, or the packs' offline hints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fal_mcp import Tool, ToolContext, ToolError, ToolHints, ToolInput, ToolResult

from .catalog import resolve_endpoints


class GetPricingInput(ToolInput):
    models: list[str] = Field(min_length=1, max_length=50, description="Aliases or endpoint ids")


class Price(BaseModel):
    model_config = ConfigDict(defer_build=True)

    model: str
    endpoint_id: str
    unit_price: float | None
    unit: str | None
    currency: str | None
    source: Literal["fal", "offline hint", "unknown"]


class Pricing(BaseModel):
    model_config = ConfigDict(defer_build=True)

    prices: list[Price]
    note: str | None = None


async def get_pricing(args: GetPricingInput, ctx: ToolContext) -> ToolResult:
    wanted = [
        (name, endpoint_id)
        for name in dict.fromkeys(args.models)
        for _, endpoint_id in resolve_endpoints(ctx, name)
    ]
    endpoint_ids = list(dict.fromkeys(endpoint_id for _, endpoint_id in wanted))[:50]
    note, live = None, {}
    try:
        answer = await ctx.platform(
            "GET",
            "/models/pricing",
            params=[("endpoint_id", e) for e in endpoint_ids],
            ttl=ctx.settings.catalog_ttl,
        )
        live = {item["endpoint_id"]: item for item in answer.get("prices", [])}
    except ToolError as exc:
        note = f"fal's pricing API could not be reached ({exc}); prices marked 'offline hint' come from the packs"
    hints = {hint.endpoint_id: hint for hint in ctx.registry.prices}
    prices = []
    for name, endpoint_id in wanted:
        if endpoint_id in live:
            item = live[endpoint_id]
            prices.append(
                Price(
                    model=name,
                    endpoint_id=endpoint_id,
                    unit_price=item["unit_price"],
                    unit=item.get("unit"),
                    currency=item.get("currency", "USD"),
                    source="fal",
                )
            )
        elif note and endpoint_id in hints:
            hint = hints[endpoint_id]
            prices.append(
                Price(
                    model=name,
                    endpoint_id=endpoint_id,
                    unit_price=hint.unit_price,
                    unit=hint.unit,
                    currency=hint.currency,
                    source="offline hint",
                )
            )
        else:
            prices.append(
                Price(
                    model=name,
                    endpoint_id=endpoint_id,
                    unit_price=None,
                    unit=None,
                    currency=None,
                    source="unknown",
                )
            )
    lines = []
    for price in prices:
        label = (
            f"{price.model} ({price.endpoint_id})" if price.model != price.endpoint_id else price.endpoint_id
        )
        if price.unit_price is None:
            lines.append(f"- {label}: no price known")
        else:
            tag = " [offline hint, may be out of date]" if price.source == "offline hint" else ""
            lines.append(f"- {label}: {price.unit_price:g} {price.currency} per {price.unit}{tag}")
    if note:
        lines.append(f"Note: {note}")
    return ToolResult("\n".join(lines), Pricing(prices=prices, note=note))


TOOL = Tool(
    name="get_pricing",
    title="Get pricing",
    description="Unit prices of fal models.",
    input_model=GetPricingInput,
    handler=get_pricing,
    output_model=Pricing,
    hints=ToolHints(read_only=True, idempotent=True),
    category="utility",
)
