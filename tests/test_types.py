"""The hook dataclasses refuse bad values on construction, naming the field."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from fal_mcp import EndpointCall, Model, PriceHint, Recommendation, Tool, ToolHints, ToolInput, find_files


class Args(ToolInput):
    prompt: str
    model: str | None = None


async def handler(args, ctx):
    return None


def build(args):
    return EndpointCall({})


def tool(**changes):
    values = dict(name="make_thing", title="Make", description="Makes.", input_model=Args, handler=handler)
    values.update(changes)
    return Tool(**values)


def test_a_valid_tool():
    made = tool(model_field="model", hints=ToolHints(read_only=True))
    assert made.category == "image"
    with pytest.raises(AttributeError):
        made.name = "other"  # frozen


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "Make Thing"}, "name"),
        ({"name": ""}, "name"),
        ({"title": "two\nlines"}, "title"),
        ({"description": " "}, "description"),
        ({"input_model": dict}, "input_model"),
        ({"handler": lambda a, c: None}, "handler"),
        ({"output_model": int}, "output_model"),
        ({"category": "Sound Effects"}, "category"),
        ({"model_field": "engine"}, "model_field"),
        ({"hints": {"read_only": True}}, "hints"),
    ],
)
def test_bad_tools_are_refused_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"\.{field}: "):
        tool(**changes)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"alias": "Flux Schnell"}, "alias"),
        ({"endpoint_id": "flux"}, "endpoint_id"),
        ({"endpoint_id": "https://fal.run/fal-ai/flux"}, "endpoint_id"),
        ({"tool": "Generate"}, "tool"),
        ({"category": "3D models!"}, "category"),
        ({"description": ""}, "description"),
        ({"build_input": "not callable"}, "build_input"),
        ({"read_output": 3}, "read_output"),
    ],
)
def test_bad_models_are_refused(changes, field):
    values = dict(
        alias="flux_schnell",
        endpoint_id="fal-ai/flux/schnell",
        tool="generate_image",
        category="image",
        description="Fast.",
        build_input=build,
    )
    Model(**values)
    values.update(changes)
    with pytest.raises(ValueError, match=rf"\.{field}: "):
        Model(**values)


def test_price_hints_and_recommendations_are_checked():
    PriceHint("fal-ai/flux/schnell", 0.003, "megapixel")
    with pytest.raises(ValueError, match="unit_price"):
        PriceHint("fal-ai/flux/schnell", -1, "image")
    with pytest.raises(ValueError, match="currency"):
        PriceHint("fal-ai/flux/schnell", 1, "image", currency="dollars")
    Recommendation("flux_pro", ("photo",), "Photoreal.", "image")
    with pytest.raises(ValueError, match="keywords"):
        Recommendation("flux_pro", ["photo"], "Photoreal.", "image")
    with pytest.raises(ValueError, match="weight"):
        Recommendation("flux_pro", ("photo",), "Photoreal.", "image", weight=0)


def test_tool_inputs_refuse_unknown_fields():
    with pytest.raises(Exception, match="colour"):
        Args(prompt="x", colour="red")
    assert issubclass(Args, BaseModel)


def test_find_files_wherever_the_model_put_them():
    output = {
        "images": [{"url": "https://x/a.png", "width": 2, "height": 3, "content_type": "image/png"}],
        "extra": {"video": {"url": "https://x/v.mp4", "file_size": 10}},
        "seed": 1,
        "text": "https://not-a-file",
    }
    files = find_files(output)
    assert [f.url for f in files] == ["https://x/a.png", "https://x/v.mp4"]
    assert (files[0].width, files[0].height, files[1].file_size) == (2, 3, 10)


def test_categories_are_open_to_packs():
    """A pack may bring a category the core has never heard of (the core names none)."""
    assert tool(category="3d").category == "3d"
    assert (
        Model(
            alias="trellis",
            endpoint_id="fal-ai/trellis",
            tool="make_mesh",
            category="3d",
            description="Image to 3D mesh.",
            build_input=build,
        ).category
        == "3d"
    )
