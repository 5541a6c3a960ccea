"""fal-mcp audio pack: music generation.

Each tool's whole story (inputs, models and their argument translation,
result) is in its own module; this module only lists them.
"""

from fal_mcp import pack_hooks

register_tools, register_models, register_pricing, register_recommendations = pack_hooks(
    __name__, "generate_music"
)
