"""get_model_schema: the input fields and output shape of any fal endpoint, from its OpenAPI document."""

from __future__ import annotations

from pydantic import Field

from fal_mcp import Tool, ToolContext, ToolError, ToolHints, ToolInput, ToolResult

from .catalog import resolve_endpoints
from .schemas import FieldInfo, ModelSchema, endpoint_schema


class GetModelSchemaInput(ToolInput):
    model: str = Field(min_length=1, max_length=200, description="Model alias or fal endpoint id")


def one_endpoint(ctx: ToolContext, name: str) -> str:
    endpoints = sorted({endpoint for _, endpoint in resolve_endpoints(ctx, name)})
    if len(endpoints) > 1:
        raise ToolError(
            f"model: {name!r} names several endpoints ({', '.join(endpoints)}); give one endpoint id"
        )
    return endpoints[0]


def _line(field: FieldInfo) -> str:
    facts = [
        field.type,
        "required" if field.required else None,
        f"default {field.default!r}" if field.default is not None else None,
        f"one of {', '.join(map(str, field.enum))}" if field.enum and "one of" not in field.type else None,
        f">= {field.minimum:g}" if field.minimum is not None else None,
        f"<= {field.maximum:g}" if field.maximum is not None else None,
    ]
    description = f": {field.description}" if field.description else ""
    return f"- {field.name} ({', '.join(f for f in facts if f)}){description}"


async def get_model_schema(args: GetModelSchemaInput, ctx: ToolContext) -> ToolResult:
    schema = (await endpoint_schema(ctx, one_endpoint(ctx, args.model))).describe()
    lines = [
        f"{schema.endpoint_id} takes:",
        *map(_line, schema.inputs),
        "and returns:",
        *map(_line, schema.outputs),
    ]
    return ToolResult("\n".join(lines), schema)


TOOL = Tool(
    name="get_model_schema",
    title="Get a model's schema",
    description="Any fal endpoint's input and output fields. Use before run_model.",
    input_model=GetModelSchemaInput,
    handler=get_model_schema,
    output_model=ModelSchema,
    hints=ToolHints(read_only=True, idempotent=True),
    category="utility",
)
