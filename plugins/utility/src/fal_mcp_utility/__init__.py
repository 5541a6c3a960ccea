"""fal-mcp utility pack: find models, get advice, prices, usage, estimates, uploads.

Each tool's whole story is in its own module; this module only lists them.
"""

from fal_mcp import pack_hooks

register_tools, register_models, register_pricing, register_recommendations = pack_hooks(
    __name__,
    "list_models",
    "recommend_model",
    "get_pricing",
    "estimate_cost",
    "get_usage",
    "upload_file",
    "get_model_schema",
    "run_model",
)
