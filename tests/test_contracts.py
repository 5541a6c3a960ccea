"""Contracts between the tools and fal's schemas of the endpoints their models call.

For every tool and every model registered for it (the first-party packs and the example pack),
hypothesis draws arguments across everything the tool's input model advertises (each optional
field present or absent, every choice, both ends of each range, the longest texts) and runs the
model's translator directly, offline: what it builds must validate against the endpoint's vendored
input schema and name no field the endpoint does not have (fal would ignore it), unless the
translator refuses first, naming the argument. Also: every model has its schema vendored, and the
core's own check (input_check.py) names the argument and the model's real limit.
"""

from __future__ import annotations

import importlib
import json
import re
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fal_mcp import ToolError
from fal_mcp.input_check import check_input
from fal_mcp.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SRC = ROOT / "examples" / "fal-mcp-speech" / "src"
FIRST_PARTY = ("fal_mcp_image", "fal_mcp_video", "fal_mcp_audio", "fal_mcp_utility", "fal_mcp_speech")
URL = "https://example.com/media/input.png"
ALPHABET = "abcdefghijklmnopqrstuvwxyz ,."


def example_pack():
    """The example pack, imported from its source folder: the suite never installs it."""
    if "fal_mcp_speech" not in sys.modules:
        sys.path.insert(0, str(EXAMPLE_SRC))
        try:
            importlib.import_module("fal_mcp_speech")
        finally:
            sys.path.remove(str(EXAMPLE_SRC))
    return sys.modules["fal_mcp_speech"]


def everything():
    """(tools by name, models by (tool, alias)): the installed packs' and the example pack's."""
    registry = load_plugins()
    tools = dict(registry.tools)
    models = {key: model for key, model in registry.models.items() if model.package in FIRST_PARTY}
    pack = example_pack()
    tools.update({tool.name: tool for tool in pack.register_tools()})
    models.update({(model.tool, model.alias): model for model in pack.register_models()})
    return tools, models


TOOLS, MODELS = everything()
CASES = sorted(MODELS)
# generate_image_structured has no models of its own: it runs generate_image's.
CASES += sorted(("generate_image_structured", alias) for tool, alias in MODELS if tool == "generate_image")


# -- drawing a tool's arguments from its input model's JSON schema --------------------------------------


def drawn(schema: dict, defs: dict, name: str = "") -> st.SearchStrategy:
    """Values across the whole range `schema` advertises, both ends and the longest included."""
    if "$ref" in schema:
        return drawn(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, name)
    if "anyOf" in schema:  # null (pydantic's Optional) once, each real branch twice: absence covers null too
        options = [drawn(option, defs, name) for option in schema["anyOf"] if option.get("type") != "null"]
        return st.one_of(*options, *options, *([st.none()] if len(options) < len(schema["anyOf"]) else []))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -(2**31)))
        high = schema.get("maximum", schema.get("exclusiveMaximum", 2**31))
        inner = (
            st.integers(low, high)
            if kind == "integer"
            else st.floats(low, high, allow_nan=False, allow_infinity=False)
        )
        return st.one_of(st.just(low), st.just(high), inner)
    if kind == "string":
        if name.endswith("_url"):
            return st.just(URL)  # media: the core resolves these before any translator runs
        if "colo" in name:
            return st.sampled_from(["#1e90ff", "#FFF", "#000000"])
        if name == "language":  # codes some model knows, and ones it may not
            return st.sampled_from(["en", "fr", "haw"]) | st.from_regex(r"[a-z]{2,3}", fullmatch=True)
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        longest = ("a long text, " * (1 + (high or 3000) // 13))[: high or 3000]  # no limit: past any model's
        short = st.text(ALPHABET, min_size=max(low, 1), max_size=min(high or 64, 64))
        return st.one_of(short, short, st.just(longest))  # mostly short: a long one is often refused
    if kind == "array":
        items = drawn(schema.get("items", {}), defs, name.rstrip("s"))
        low, high = schema.get("minItems", 0), min(schema.get("maxItems", 4), 8)
        return st.lists(items, min_size=low, max_size=high) | st.lists(items, min_size=high, max_size=high)
    if kind == "object" and "properties" in schema:
        fields = {key: drawn(value, defs, key) for key, value in schema["properties"].items()}
        return some_of(fields, set(schema.get("required", ())))
    return st.just({})


@st.composite
def some_of(draw, fields: dict, required: set) -> dict:
    """The required fields, and each optional one present or absent, even odds."""
    return {key: draw(value) for key, value in fields.items() if key in required or draw(st.booleans())}


def tool_arguments(tool, alias: str) -> st.SearchStrategy:
    schema = tool.input_model.model_json_schema()
    defs = schema.get("$defs", {})
    fields = {key: drawn(value, defs, key) for key, value in schema["properties"].items()}
    if tool.name == "generate_video_from_video":  # each model's own options, as that model lists them
        from fal_mcp_video.generate_video_from_video import OPTIONS

        options = OPTIONS[alias].model_json_schema()
        fields["options"] = drawn(options, options.get("$defs", {}))
    model_field = tool.model_field or ("model" if "model" in fields else None)
    if model_field:
        fields[model_field] = st.just(alias)
    return some_of(fields, set(schema.get("required", ())) | ({model_field} if model_field else set()))


# -- what each tool hands its model's translator (most hand it their own arguments) ---------------------


def _generate_video(args, model, data):
    from fal_mcp_video.generate_video import choose

    if args.image_url is None and not args.prompt:
        raise ToolError("give image_url, prompt, or both")  # the handler's own refusal
    ctx = SimpleNamespace(model=lambda name=None: _resolve("generate_video", name))
    chosen, _ = choose(ctx, args)  # the image decides which of the family's endpoints runs
    return [(chosen, args)]


def _resize_image(args, model, data):
    from fal_mcp_image.resize_image import SIZES, Outpaint, expand_limit, outpaint_plan

    if args.mode != "extend":
        return []  # crop and pad are done here, with no model
    target = SIZES.get(args.target_format) or (args.width, args.height)
    sides = st.integers(16, 4096)
    image = (data.draw(sides, "image width"), data.draw(sides, "image height"))
    _, (left, right, top, bottom) = outpaint_plan(image, target, expand_limit(model))
    if not (left or right or top or bottom):
        return []
    return [(model, Outpaint(URL, left, right, top, bottom, args.background_prompt, args.seed))]


def _structured(args, model, data):
    from fal_mcp_image.generate_image import GenerateImageInput
    from fal_mcp_image.generate_image_structured import (
        KEYWORD_PROMPT_ENDPOINTS,
        keyword_prompt,
        sentence_prompt,
    )

    prompt = keyword_prompt(args) if model.endpoint_id in KEYWORD_PROMPT_ENDPOINTS else sentence_prompt(args)
    try:
        request = GenerateImageInput(
            prompt=prompt,
            model=model.alias,
            negative_prompt=args.negative_prompt,
            image_size=args.image_size,
            num_images=args.num_images,
            seed=args.seed,
        )
    except ValidationError:
        raise ToolError("scene, subjects and the other descriptions make too long a prompt") from None
    return [(model, request)]


ADAPTERS = {
    "generate_video": _generate_video,
    "resize_image": _resize_image,
    "generate_image_structured": _structured,
}


def _resolve(tool: str, name: str | None):
    if name is None:
        return next(m for (t, _), m in MODELS.items() if t == tool and m.default)
    return next(m for (t, a), m in MODELS.items() if t == tool and name in (a, m.endpoint_id))


# -- the contract ------------------------------------------------------------------------------------------

_validators: dict = {}


def assert_fits(model, arguments: dict) -> None:
    from jsonschema import Draft202012Validator

    schema = model.input_schema()
    assert schema, f"{model.package} vendors no schema for {model.endpoint_id}"
    validator = _validators.setdefault(model.endpoint_id, Draft202012Validator(schema))
    problems = [
        f"{'.'.join(map(str, e.absolute_path)) or '(input)'}: {e.message[:200]}"
        for e in validator.iter_errors(arguments)
    ]
    problems += [
        f"{name}: not a field of {model.endpoint_id} (fal would ignore it)"
        for name in arguments
        if name not in schema["properties"]
    ]
    assert not problems, f"{model.alias} ({model.endpoint_id}) would send what fal refuses: {problems}"
    json.dumps(arguments)  # sent as JSON


@pytest.mark.parametrize(("tool_name", "alias"), CASES, ids=[f"{t}-{a}" for t, a in CASES])
def test_what_a_tool_sends_fits_the_endpoint_schema(tool_name, alias):
    tool = TOOLS[tool_name]
    model = _resolve("generate_image" if tool_name == "generate_image_structured" else tool_name, alias)
    adapter = ADAPTERS.get(tool_name, lambda args, model, data: [(model, args)])
    names = set(tool.input_model.model_fields)

    @settings(
        max_examples=80,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(arguments=tool_arguments(tool, alias), data=st.data())
    def check(arguments, data):
        try:
            args = tool.input_model.model_validate(arguments)
        except ValidationError:
            assume(False)  # a rule between fields the draw broke: the server refuses these itself
        try:
            for chosen, request in adapter(args, model, data):
                assert_fits(chosen, chosen.build_input(request).arguments)
        except (ToolError, ValueError) as exc:  # refused first: fine, if it names the argument
            named = any(re.search(rf"\b{name}\b", str(exc)) for name in names)
            assert named, f"the refusal names no argument: {exc}"

    check()


def test_every_model_vendors_its_endpoint_schema():
    for (_, alias), model in MODELS.items():
        document = model.schema()
        assert document is not None, f"{model.package}/schemas has no file for {model.endpoint_id} ({alias})"
        assert document["endpoint_id"] == model.endpoint_id
        assert document["source"] and re.fullmatch(r"\d{4}-\d{2}-\d{2}", document["date"])
        for part in (model.input_schema(), model.output_schema()):
            assert part and part.get("type") == "object" and "properties" in part, (alias, part)


def test_schemas_compile_and_none_is_left_over():
    from jsonschema import Draft202012Validator

    from fal_mcp.endpoint_schemas import schema_file_name

    wanted: dict[str, set[str]] = {}
    for model in MODELS.values():
        wanted.setdefault(model.package, set()).add(schema_file_name(model.endpoint_id))
    for package, names in wanted.items():
        folder = Path(importlib.import_module(package).__file__).parent / "schemas"
        assert {path.name for path in folder.glob("*.json")} == names, package
        for name in names:
            document = json.loads((folder / name).read_text(encoding="utf-8"))
            Draft202012Validator.check_schema(document["input"])
            Draft202012Validator.check_schema(document["output"])


# -- the core's check -----------------------------------------------------------------------------------


def problems(tool: str, alias: str, arguments: dict, tool_arguments=None) -> str:
    with pytest.raises(ToolError) as caught:
        check_input(MODELS[(tool, alias)], arguments, tool_arguments, tool)
    return str(caught.value)


def test_the_check_names_the_argument_and_the_model_limit():
    from fal_mcp_video.generate_video_from_image import GenerateVideoFromImageInput

    args = GenerateVideoFromImageInput(image_url=URL, prompt="waves", duration=7)
    text = problems(
        "generate_video_from_image", "kling", {"prompt": "waves", "image_url": URL, "duration": "7"}, args
    )
    assert text == (
        "Invalid arguments for generate_video_from_image: duration: "
        "fal-ai/kling-video/v2.1/standard/image-to-video takes '5' or '10' (got '7') "
        "(nothing was sent to fal)"
    )
    text = problems("generate_video_from_image", "kling", {"prompt": "w" * 3000, "image_url": URL}, args)
    assert (
        "prompt: fal-ai/kling-video/v2.1/standard/image-to-video takes at most 2500 characters "
        "(got 3000 characters)" in text
    )


def test_the_check_follows_the_model_map_and_refuses_fields_fal_would_ignore():
    from fal_mcp_audio.generate_music import GenerateMusicInput

    args = GenerateMusicInput(prompt="jazz", duration_seconds=300)
    text = problems("generate_music", "musicgen", {"prompt": "jazz", "duration": 300}, args)
    assert (
        "duration_seconds (sent as duration): CassetteAI/music-generator takes at most 180 (got 300)"
    ) in text
    text = problems("generate_music", "ace_step", {"tags": "jazz", "negative_prompt": "vocals"}, args)
    assert "negative_prompt: fal-ai/ace-step has no such input" in text
    text = problems("generate_music", "ace_step", {"duration": 60}, args)
    assert "prompt (sent as tags): fal-ai/ace-step requires it" in text
    text = problems("text_to_speech", "kokoro", {"prompt": "hi", "voice": "robot"})
    assert "voice: fal-ai/kokoro/american-english takes one of 'af_heart'" in text and "(20 values)" in text


def test_a_model_without_a_vendored_schema_is_not_checked():
    from fal_mcp import EndpointCall, Model

    def build(args):
        return EndpointCall({"anything": 1})

    model = Model("x", "fal-ai/not-vendored", "generate_image", "No schema.", build)
    check_input(model, {"anything": 1})  # nothing to check against: fal decides


def test_the_check_is_cheap():
    model = MODELS[("generate_image", "flux_schnell")]
    arguments = {"prompt": "a fox in the snow", "image_size": "landscape_16_9", "num_images": 2, "seed": 7}
    check_input(model, arguments)  # compiled once per endpoint, on first use
    timings = []
    for _ in range(200):
        start = time.perf_counter()
        check_input(model, arguments)
        timings.append(time.perf_counter() - start)
    assert statistics.median(timings) < 0.01  # compiling takes far longer; 10x headroom for a loaded machine


@pytest.mark.anyio
async def test_run_model_refuses_before_anything_is_submitted(registry):
    from fal_mcp.context import ToolContext
    from fal_mcp_audio.generate_music import GenerateMusicInput

    class Gateway:
        async def run(self, *args, **kwargs):
            raise AssertionError("submitted to fal")

    tool = registry.tools["generate_music"]
    model = registry.resolve_model("generate_music", "lyria2")
    ctx = ToolContext(tool=tool, gateway=Gateway(), registry=registry, settings=None)
    with pytest.raises(ToolError, match=r"prompt: lyria2 takes at most 2000 characters \(got 2001\)"):
        await ctx.run_model(model, GenerateMusicInput(prompt="x" * 2001, model="lyria2"))

    def mistaken(args):  # a translator sending a field lyria2 does not have
        return SimpleNamespace(arguments={"prompt": args.prompt, "seconds": 30})

    mistaken.__module__ = "fal_mcp_audio.generate_music"  # as if the audio pack had it: its schemas apply
    broken = type(model)("lyria2", model.endpoint_id, model.tool, model.description, mistaken)
    with pytest.raises(ToolError, match="seconds: fal-ai/lyria2 has no such input"):
        await ctx.run_model(broken, GenerateMusicInput(prompt="strings", model="lyria2"))


def test_where_fal_js_head_is_newer_it_is_followed_and_said_so():
    aura = MODELS[("upscale_image", "aura_sr")].schema()
    fields = aura["input"]["properties"]
    assert "upscale_factor" in fields and "upscaling_factor" not in fields
    assert aura["head_changes"]["input_fields_removed"] == ["upscaling_factor"] and "renamed" in aura["note"]
    outpaint = MODELS[("resize_image", "outpaint")].schema()
    assert "seed" in outpaint["input"]["properties"] and "added seed" in outpaint["note"]
    lucy = MODELS[("generate_video_from_video", "lucy_edit")].schema()
    assert lucy["endpoint_id"] == "decart/lucy-edit/pro" and lucy["in_head"]
    assert "lucy-edit/dev" in lucy["note"]
    cassette = MODELS[("generate_music", "musicgen")].schema()
    assert cassette["snapshot_endpoint_id"] == "cassetteai/music-generator"
    assert all(model.schema().get("in_head", True) for model in MODELS.values())  # nothing gone from fal


def test_a_model_maps_its_fields_to_the_arguments_and_lives_where_its_translator_does():
    import functools

    from fal_mcp import EndpointCall, Model

    def build(args, extra=None):
        return EndpointCall({})

    build.__module__ = "fal_mcp_audio.generate_music"
    model = Model(
        "m",
        "fal-ai/m",
        "generate_music",
        "M.",
        functools.partial(build, extra=1),
        field_arguments={"tags": "prompt"},
    )
    assert model.package == "fal_mcp_audio" and model.field_arguments == {"tags": "prompt"}
    with pytest.raises(ValueError, match="field_arguments"):
        Model("m", "fal-ai/m", "generate_music", "M.", build, field_arguments={"tags": 1})
