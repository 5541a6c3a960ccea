"""A well-formed test pack: one tool, one extra model for generate_image, a price, a recommendation."""

from pydantic import Field

from fal_mcp import (
    EndpointCall,
    Model,
    PriceHint,
    Recommendation,
    Tool,
    ToolContext,
    ToolHints,
    ToolInput,
    ToolResult,
    hookimpl,
)


class EchoInput(ToolInput):
    text: str = Field(min_length=1, description="Text to echo")
    times: int = Field(1, ge=1, le=3)


async def echo(args: EchoInput, ctx: ToolContext) -> ToolResult:
    await ctx.progress("echoing")
    return ToolResult(" ".join([args.text] * args.times), {"text": args.text, "times": args.times})


@hookimpl
def register_tools():
    yield Tool(
        "echo_test",
        "Echo",
        "Echo text back (test pack).",
        EchoInput,
        echo,
        hints=ToolHints(read_only=True, open_world=False),
        category="utility",
    )


@hookimpl
def register_models():
    yield Model(
        "testgood_model",
        "fal-ai/flux/dev",
        "generate_image",
        "A test alias for flux dev",
        lambda args: EndpointCall({"prompt": args.prompt}),
    )


@hookimpl
def register_pricing():
    return [PriceHint("fal-ai/testgood", 0.5, "image")]


@hookimpl
def register_recommendations():
    yield Recommendation("testgood_model", ("testing",), "Made for tests", "image")
