"""run_model: run any fal endpoint with an input checked against its schema before anything is spent."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from fal_mcp import GenerationOutput, Tool, ToolContext, ToolError, ToolInput, ToolResult, find_files

from .get_model_schema import one_endpoint
from .schemas import endpoint_schema

SHOWN_STRING = 2000  # longer strings in the raw output (e.g. data: URIs) are cut


class RunModelInput(ToolInput):
    model: str = Field(min_length=1, max_length=200, description="Model alias or fal endpoint id")
    input: dict[str, Any] = Field(description="As get_model_schema says")


class RunModelOutput(GenerationOutput):
    # A default: a call handed off before its job finished has no answer yet (runner.handoff_result).
    output: dict[str, Any] = Field(
        default_factory=dict, description="The endpoint's whole answer (long strings shortened)"
    )


def _shorten(value: Any) -> Any:
    if isinstance(value, str) and len(value) > SHOWN_STRING:
        return value[:SHOWN_STRING] + f"... ({len(value)} characters)"
    if isinstance(value, dict):
        return {key: _shorten(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shorten(item) for item in value]
    return value


async def run_model(args: RunModelInput, ctx: ToolContext) -> ToolResult:
    endpoint_id = one_endpoint(ctx, args.model)
    schema = await endpoint_schema(ctx, endpoint_id)
    problems = schema.problems(args.input)
    if problems:
        raise ToolError(
            f"Invalid input for {endpoint_id} (422, nothing was sent to fal): " + "; ".join(problems),
            kind="refused",
        )
    result = await ctx.run(endpoint_id, args.input)
    files = find_files(result.data)
    seed = result.data.get("seed")
    output = RunModelOutput(
        files=files,
        endpoint=endpoint_id,
        request_id=result.request_id,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        prompt=args.input.get("prompt") if isinstance(args.input.get("prompt"), str) else None,
        output=_shorten(result.data),
    )
    lines = [f"{endpoint_id} finished (request {result.request_id}) with {len(files)} file(s):"]
    lines += [f"- {f.url} ({f.content_type or 'unknown type'})" for f in files]
    text = result.data.get("text")
    if isinstance(text, str):
        lines.append(f"Text: {text[:SHOWN_STRING]}")
    return ToolResult("\n".join(lines), output)


TOOL = Tool(
    name="run_model",
    title="Run any fal model",
    description="Run any fal endpoint with an input object, checked against its schema first.",
    input_model=RunModelInput,
    handler=run_model,
    output_model=RunModelOutput,
    category="utility",
)
