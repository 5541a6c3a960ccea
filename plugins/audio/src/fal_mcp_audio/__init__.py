"""fal-mcp audio pack: music generation.

Each tool's whole story (inputs, models and their argument translation,
result) is in its own module; this module only registers them.
"""

from fal_mcp import hookimpl


@hookimpl
def register_tools():
    from . import generate_music

    yield generate_music.TOOL


@hookimpl
def register_models():
    from . import generate_music

    yield from generate_music.MODELS


@hookimpl
def register_pricing():
    from . import generate_music

    yield from generate_music.PRICES


@hookimpl
def register_recommendations():
    from . import generate_music

    yield from generate_music.RECOMMENDATIONS
