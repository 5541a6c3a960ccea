"""fal-mcp video pack: video generation tools.

Each tool's whole story (inputs, models and their argument translation,
result) is in its own module; `endpoints` and `translate` hold what they
share. This module only registers them, importing them when asked.
"""

from fal_mcp import hookimpl


def _tools():
    from . import generate_video, generate_video_from_image, generate_video_from_video

    return generate_video, generate_video_from_image, generate_video_from_video


@hookimpl
def register_tools():
    for module in _tools():
        yield module.TOOL


@hookimpl
def register_models():
    for module in _tools():
        yield from module.MODELS


@hookimpl
def register_pricing():
    from . import endpoints

    yield from endpoints.PRICES


@hookimpl
def register_recommendations():
    for module in _tools():
        yield from module.RECOMMENDATIONS
