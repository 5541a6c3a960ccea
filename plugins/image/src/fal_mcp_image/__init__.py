"""fal-mcp image pack: image generation and editing tools.

Each tool's whole story (inputs, models and their argument translation,
result) is in its own module; this module only registers them. The modules
are imported inside the hooks, so loading the pack stays cheap.
"""

from fal_mcp import hookimpl

TOOL_MODULES = ("generate_image", "generate_image_structured", "generate_image_from_image",
                "remove_background", "upscale_image", "edit_image", "inpaint_image", "resize_image",
                "compose_images")


def _modules():
    from importlib import import_module

    return [import_module(f"{__name__}.{name}") for name in TOOL_MODULES]


@hookimpl
def register_tools():
    for module in _modules():
        yield module.TOOL


@hookimpl
def register_models():
    for module in _modules():
        yield from getattr(module, "MODELS", ())


@hookimpl
def register_pricing():
    for module in _modules():
        yield from getattr(module, "PRICES", ())


@hookimpl
def register_recommendations():
    for module in _modules():
        yield from getattr(module, "RECOMMENDATIONS", ())
