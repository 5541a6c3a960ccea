"""generate_video_from_video: restyle or edit a video with a prompt.

Besides the common fields, each model takes its own settings in `options`, checked
against that model's own list: an option the chosen model does not take is refused,
naming the ones it does take, rather than sent and silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from fal_mcp import (
    ArgumentError,
    EndpointCall,
    EndpointInput,
    GenerationOutput,
    MediaUrl,
    Model,
    Recommendation,
    Tool,
    ToolContext,
    ToolInput,
    ToolResult,
    input_field,
)

from . import endpoints
from .translate import PACKAGE, video_result

Motion = Literal["zoom-in", "zoom-out", "pan-left", "pan-right", "tilt-up", "tilt-down"]


def _ranged(endpoint_id: str, name: str, what: str) -> Any:
    """An option bounded by the endpoint's own range (from its vendored schema), saying so. Without the
    schema (not vendored yet: scripts/vendor_schemas.py loads this pack to find its endpoints) it is
    unbounded here; the contract tests require every schema."""
    field = input_field(PACKAGE, endpoint_id, name)
    if "minimum" not in field or "maximum" not in field:
        return Field(None, description=what)
    low, high, default = field["minimum"], field["maximum"], field.get("default")
    usual = f" (default {default:g})" if default is not None else ""
    return Field(None, ge=low, le=high, description=f"{what}, {low:g}-{high:g}{usual}")


class AnimateDiffOptions(ToolInput):
    first_n_seconds: int | None = _ranged(
        endpoints.ANIMATEDIFF_V2V, "first_n_seconds", "seconds of the input to restyle"
    )
    fps: int | None = _ranged(endpoints.ANIMATEDIFF_V2V, "fps", "frames per second")
    guidance_scale: float | None = _ranged(endpoints.ANIMATEDIFF_V2V, "guidance_scale", "prompt adherence")
    motions: list[Motion] | None = Field(
        None, description="camera motions: zoom-in, zoom-out, pan-left, pan-right, tilt-up, tilt-down"
    )
    negative_prompt: str | None = Field(None, max_length=10_000, description="what to avoid")
    num_inference_steps: int | None = _ranged(
        endpoints.ANIMATEDIFF_V2V, "num_inference_steps", "denoising steps"
    )


class LucyEditOptions(ToolInput):
    enhance_prompt: bool | None = Field(
        None, description="let the model rewrite the prompt first (default true)"
    )


# Each model's own settings, by alias.
OPTIONS: dict[str, type[BaseModel]] = {"animatediff": AnimateDiffOptions, "lucy_edit": LucyEditOptions}


def _describe_options() -> str:
    # Names only: a value out of range is refused with the range, and get_model_schema lists them all.
    per_model = [f"{alias}: {', '.join(schema.model_fields)}" for alias, schema in OPTIONS.items()]
    return "Only the chosen model's: " + "; ".join(per_model)


class GenerateVideoFromVideoInput(ToolInput):
    video_url: MediaUrl = Field()
    prompt: str = Field(min_length=1, max_length=10_000, description="The style or edit")
    model: str | None = Field(None, description="Model to use.")
    strength: float | None = Field(
        None,
        ge=0.1,
        le=1,
        description=("How much to change it"),
    )
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    options: dict[str, Any] | None = Field(None, description=_describe_options())


def read_options(model: str, args: Any) -> dict[str, Any]:
    """`args.options` checked against the model's own settings; an ArgumentError names each problem."""
    schema = OPTIONS[model]
    try:
        return schema.model_validate(args.options or {}).model_dump(exclude_none=True)
    except ValidationError as exc:
        takes = ", ".join(schema.model_fields)
        problems = []
        for error in exc.errors(include_url=False):
            where = ".".join(["options", *map(str, error["loc"])])
            if error["type"] == "extra_forbidden":
                problems.append((where, f"{model} does not take this option; it takes: {takes}"))
            else:
                problems.append((where, f"{error['msg']} (got {error['input']!r:.60})"))
        # One error naming the first field; the others follow in its message, each with its own field.
        (field, first), *others = problems
        raise ArgumentError(
            field, "; ".join([first, *(f"{where}: {problem}" for where, problem in others)])
        ) from None


def animatediff(args: Any) -> EndpointCall:
    req = EndpointInput(args, "animatediff", endpoints.ANIMATEDIFF_V2V, PACKAGE)
    req.send(**read_options("animatediff", args))
    req.copy("prompt", "video_url", "strength", "seed")
    return req.call()


def lucy_edit(args: Any) -> EndpointCall:
    req = EndpointInput(args, "lucy_edit", endpoints.LUCY_EDIT, PACKAGE)
    req.send(**read_options("lucy_edit", args))
    req.copy("prompt", "video_url")
    req.send(sync_mode=False)  # its default answers with the whole video inline as a data: URI
    req.drop("strength", "takes no strength")
    req.drop("seed", endpoints.NO_SEED)
    return req.call()


def _model(alias: str, endpoint_id: str, description: str, translator, default: bool = False) -> Model:
    return Model(alias, endpoint_id, "generate_video_from_video", description, translator, default=default)


MODELS = [
    _model(
        "animatediff",
        endpoints.ANIMATEDIFF_V2V,
        "AnimateDiff video-to-video: restyles the first seconds of a video (strength, seed)",
        animatediff,
        default=True,
    ),
    _model(
        "lucy_edit",
        endpoints.LUCY_EDIT,
        "Lucy Edit [pro]: edits a video by instruction, keeping its length and motion",
        lucy_edit,
    ),
]

RECOMMENDATIONS = [
    Recommendation(
        endpoints.ANIMATEDIFF_V2V,
        ("restyle", "stylize", "style transfer", "style", "look", "filter", "anime", "cartoon"),
        "AnimateDiff video-to-video: restyle a clip with a prompt",
        "video",
    ),
    Recommendation(
        "lucy_edit",
        ("edit video", "video editing", "replace", "change clothes", "instruction"),
        "Lucy Edit: change what is in a video by instruction, keeping its motion",
        "video",
    ),
]


async def generate_video_from_video(args: GenerateVideoFromVideoInput, ctx: ToolContext) -> ToolResult:
    model = ctx.model(args.model)
    result, call = await ctx.run_model(model, args)
    return video_result("Made", model, result, call)


TOOL = Tool(
    name="generate_video_from_video",
    title="Generate video from video",
    description=("Restyle or edit a video, guided by a prompt."),
    input_model=GenerateVideoFromVideoInput,
    handler=generate_video_from_video,
    output_model=GenerationOutput,
    category="video",
    model_field="model",
)
