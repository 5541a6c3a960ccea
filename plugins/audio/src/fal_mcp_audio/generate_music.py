"""generate_music: music from a text prompt.

fal no longer offers MusicGen, so the original API's aliases run music models that
exist (the result names the endpoint). Each model's real length limits, read from fal's
schema of its endpoint (vendored in schemas/), are honoured: a length it cannot make is
clamped, with a note saying what was made; a prompt longer than it takes is refused. A
parameter a model cannot take is dropped with a note rather than sent and silently ignored.
"""

from __future__ import annotations

from pydantic import Field

from fal_mcp import (
    ArgumentError,
    EndpointCall,
    EndpointInput,
    GenerationOutput,
    Model,
    PriceHint,
    Recommendation,
    Tool,
    ToolContext,
    ToolInput,
    ToolResult,
    generation_output,
)

PACKAGE = __name__.split(".")[0]  # where the endpoints' schemas are vendored


class GenerateMusicInput(ToolInput):
    prompt: str = Field(min_length=1, max_length=10_000, description="Genre, mood, instruments, tempo")
    duration_seconds: int = Field(30, ge=5, le=300, description="Seconds")
    model: str | None = Field(None, description="Model to use.")
    negative_prompt: str | None = Field(None, max_length=10_000, description="What to avoid (lyria2)")
    seed: int | None = Field(
        None,
        ge=0,
        le=2**32 - 1,
        description="Seed (lyria2, ace_step)",
    )


def _translator(
    name: str,
    endpoint_id: str,
    *,
    length_field: str | None,
    fixed_length: int | None = None,
    prompt_field: str = "prompt",
    takes_seed: bool = False,
    takes_negative_prompt: bool = False,
):
    """The lengths a model can make are its `length_field`'s range in the endpoint's schema;
    `length_field` None: it always makes `fixed_length` seconds (and takes no length)."""

    def build_input(args: GenerateMusicInput) -> EndpointCall:
        req = EndpointInput(args, name, endpoint_id, PACKAGE)
        # Checked here, not by send(): the message names the user's argument, also when it is sent as tags.
        limit = req.field(prompt_field).get("maxLength")
        if limit is not None and len(args.prompt) > limit:
            raise ArgumentError(
                "prompt", f"{name} takes at most {limit} characters (got {len(args.prompt)}); shorten it"
            )
        req.send(**{prompt_field: args.prompt})
        if length_field:
            field = req.field(length_field)
            # A length of 0 s (stable-audio's minimum) is no music: at least 1 s.
            lengths = (max(1, field["minimum"]), field["maximum"])
        else:
            lengths = (fixed_length, fixed_length)
        seconds = min(max(args.duration_seconds, lengths[0]), lengths[1])
        if length_field:
            req.send(**{length_field: seconds})
        req.facts["seconds"] = float(seconds)
        if seconds != args.duration_seconds:
            low, high = lengths
            can = f"makes {low}-{high} s" if low != high else f"always makes {low} s"
            req.note(
                f"duration_seconds: {name} {can}, so {seconds} s was made instead of "
                f"{args.duration_seconds} s"
            )
        if takes_seed:
            req.copy("seed")
        else:
            req.drop("seed", "takes no seed (lyria2 and ace_step do)")
        if takes_negative_prompt:
            req.send(negative_prompt=args.negative_prompt or None)
        else:
            req.drop("negative_prompt", "takes none (lyria2 does)")
        return req.call()

    return build_input


def _model(alias: str, endpoint_id: str, description: str, default: bool = False, **translation) -> Model:
    translator = _translator(alias, endpoint_id, **translation)
    # The endpoint fields named otherwise than the tool's arguments, for the core's messages.
    named = {translation.get("prompt_field", "prompt"): "prompt"}
    if translation.get("length_field"):
        named[translation["length_field"]] = "duration_seconds"
    return Model(
        alias, endpoint_id, "generate_music", description, translator, default=default, field_arguments=named
    )


MODELS = [
    _model(
        "musicgen",
        "CassetteAI/music-generator",
        "CassetteAI music generator (MusicGen is gone from fal): fast instrumental music, 10-180 s",
        default=True,
        length_field="duration",
    ),
    _model(
        "musicgen_large",
        "fal-ai/stable-audio",
        "Stable Audio Open (MusicGen is gone from fal): music and sound, 1-47 s",
        length_field="seconds_total",
    ),
    _model(
        "ace_step",
        "fal-ai/ace-step",
        "ACE-Step: songs from genre/mood tags, 5-240 s, takes a seed",
        length_field="duration",
        prompt_field="tags",
        takes_seed=True,
    ),
    # Lyria 2's schema has no length: fal documents 30 s clips.
    _model(
        "lyria2",
        "fal-ai/lyria2",
        "Google Lyria 2: high-quality music, always 30 s, takes negative_prompt and seed",
        length_field=None,
        fixed_length=30,
        takes_seed=True,
        takes_negative_prompt=True,
    ),
]

# Offline hints only; live prices come from fal's pricing API.
PRICES = [
    PriceHint("CassetteAI/music-generator", 0.002, "second"),
    PriceHint("fal-ai/stable-audio", 0.001, "second"),
    PriceHint("fal-ai/ace-step", 0.0002, "second"),
    PriceHint("fal-ai/lyria2", 0.1, "request"),
]

RECOMMENDATIONS = [
    Recommendation(
        "musicgen",
        ("music", "background music", "background track", "soundtrack", "instrumental", "fast", "long"),
        "CassetteAI: fast instrumental music up to 3 minutes",
        "audio",
    ),
    Recommendation(
        "musicgen_large",
        ("sound effect", "sfx", "ambient", "loop", "short"),
        "Stable Audio Open: short music and sound effects up to 47 s",
        "audio",
    ),
    Recommendation(
        "ace_step",
        ("song", "lyrics", "vocals", "singing", "singer", "genre", "tags"),
        "ACE-Step: songs from genre tags, up to 4 minutes",
        "audio",
    ),
    Recommendation(
        "lyria2",
        ("high quality", "orchestral", "composition", "cinematic", "music"),
        "Lyria 2: the best sound quality, 30 s clips",
        "audio",
        weight=1.5,
    ),
]


async def generate_music(args: GenerateMusicInput, ctx: ToolContext) -> ToolResult:
    model = ctx.model(args.model)
    result, call = await ctx.run_model(model, args)
    output = generation_output(model, result, call, prompt=args.prompt, expect="audio")
    seconds = call.facts.get("seconds")
    seeded = f", seed {output.seed}" if output.seed is not None else ""
    length = f"{seconds:g} s of " if seconds else ""
    lines = [
        f"Generated {length}music with {model.alias} ({model.endpoint_id}){seeded}, "
        f"fal request {result.request_id}:"
    ]
    lines += [f"{file.url} ({file.content_type or 'audio'}, {file.file_size} bytes)" for file in output.files]
    lines += [f"Note: {note}" for note in output.notes]
    return ToolResult("\n".join(lines), output)


TOOL = Tool(
    name="generate_music",
    title="Generate music",
    description="Generate music from a prompt.",
    input_model=GenerateMusicInput,
    handler=generate_music,
    output_model=GenerationOutput,
    category="audio",
    model_field="model",
)
