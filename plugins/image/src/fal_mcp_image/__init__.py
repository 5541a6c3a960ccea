"""fal-mcp image pack: image generation and editing tools.

Each tool's whole story (inputs, models and their argument translation,
result) is in its own module; this module only registers them.
"""

from fal_mcp import hookimpl


@hookimpl
def register_tools():
    from . import generate_image

    yield generate_image.TOOL


@hookimpl
def register_models():
    from . import generate_image

    yield from generate_image.MODELS


@hookimpl
def register_pricing():
    from . import generate_image

    yield from generate_image.PRICES


@hookimpl
def register_recommendations():
    from . import generate_image

    yield from generate_image.RECOMMENDATIONS
