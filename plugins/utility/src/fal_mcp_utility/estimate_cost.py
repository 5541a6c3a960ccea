"""estimate_cost: what a number of calls or units of a model would cost, from fal's estimate API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fal_mcp import Tool, ToolContext, ToolError, ToolHints, ToolInput, ToolResult

from .catalog import resolve_endpoints


class EstimateCostInput(ToolInput):
    model: str = Field(min_length=1, max_length=200, description="Model alias or fal endpoint id")
    quantity: float = Field(gt=0, le=1_000_000)
    basis: Literal["calls", "units"] = Field(
        "calls",
        description="calls, or the model's billing units at its unit price",
    )


class CostEstimate(BaseModel):
    model_config = ConfigDict(defer_build=True)

    model: str
    endpoint_id: str
    quantity: float
    basis: str
    total_cost: float
    currency: str


async def estimate_cost(args: EstimateCostInput, ctx: ToolContext) -> ToolResult:
    targets = resolve_endpoints(ctx, args.model)
    if len({endpoint for _, endpoint in targets}) > 1:
        options = ", ".join(endpoint for _, endpoint in targets)
        raise ToolError(f"model: {args.model!r} names several endpoints ({options}); give one endpoint id")
    endpoint_id = targets[0][1]
    if args.basis == "calls":
        body = {
            "estimate_type": "historical_api_price",
            "endpoints": {endpoint_id: {"call_quantity": args.quantity}},
        }
    else:
        body = {"estimate_type": "unit_price", "endpoints": {endpoint_id: {"unit_quantity": args.quantity}}}
    answer = await ctx.platform("POST", "/models/pricing/estimate", json=body)
    estimate = CostEstimate(
        model=args.model,
        endpoint_id=endpoint_id,
        quantity=args.quantity,
        basis=args.basis,
        total_cost=float(answer["total_cost"]),
        currency=answer.get("currency", "USD"),
    )
    return ToolResult(
        f"{args.quantity:g} {args.basis} of {endpoint_id}: about {estimate.total_cost:.4f} "
        f"{estimate.currency} (fal's estimate)",
        estimate,
    )


TOOL = Tool(
    name="estimate_cost",
    title="Estimate cost",
    description="Estimate what calls or units of a model would cost.",
    input_model=EstimateCostInput,
    handler=estimate_cost,
    output_model=CostEstimate,
    hints=ToolHints(read_only=True, idempotent=True),
    category="utility",
)
