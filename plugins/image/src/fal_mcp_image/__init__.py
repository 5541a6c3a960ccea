"""fal-mcp image pack: image generation and editing tools.

Each tool's whole story (inputs, models and their argument translation,
result) is in its own module; this module only lists them. The modules
are imported when a hook is called, so loading the pack stays cheap.
"""

from fal_mcp import pack_hooks

register_tools, register_models, register_pricing, register_recommendations = pack_hooks(
    __name__,
    "generate_image",
    "generate_image_structured",
    "generate_image_from_image",
    "remove_background",
    "upscale_image",
    "edit_image",
    "inpaint_image",
    "resize_image",
    "compose_images",
)
