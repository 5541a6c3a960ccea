"""fal-mcp video pack: video generation tools.

Each tool's whole story (inputs, models and their argument translation,
result) is in its own module; `endpoints` holds the endpoints several tools
share (with their prices) and `translate` the duration helpers.
"""

from fal_mcp import pack_hooks

register_tools, register_models, register_pricing, register_recommendations = pack_hooks(
    __name__, "generate_video", "generate_video_from_image", "generate_video_from_video", "endpoints"
)
