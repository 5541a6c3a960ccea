"""fal-mcp utility pack: find models, get advice, prices, usage, estimates, uploads.

Each tool's whole story is in its own module; this module only registers them.
"""

from fal_mcp import hookimpl

TOOL_MODULES = ("list_models", "recommend_model", "get_pricing", "estimate_cost", "get_usage", "upload_file",
                "get_model_schema", "run_model")


@hookimpl
def register_tools():
    from importlib import import_module

    for name in TOOL_MODULES:
        yield import_module(f"{__name__}.{name}").TOOL
