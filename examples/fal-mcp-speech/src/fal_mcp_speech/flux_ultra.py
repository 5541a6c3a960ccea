"""One more model for a tool of another pack: `generate_image` (fal-mcp-image) gets `flux_pro_ultra`.

Nothing is imported from that pack: the translator reads generate_image's arguments by name
(prompt, negative_prompt, image_size, num_images, seed) and writes the fields
fal-ai/flux-pro/v1.1-ultra really takes. That endpoint has no image_size, only an aspect ratio
(it picks the resolution itself, up to 4 MP), and no negative prompt.
"""

from __future__ import annotations

from typing import Any

from fal_mcp import EndpointCall, Model, PriceHint, Recommendation

ALIAS = "flux_pro_ultra"

# generate_image's size names -> the ultra endpoint's aspect_ratio values.
ASPECT_RATIO = {
    "square": "1:1",
    "landscape_4_3": "4:3",
    "landscape_16_9": "16:9",
    "portrait_3_4": "3:4",
    "portrait_9_16": "9:16",
}


def ultra_input(args: Any) -> EndpointCall:
    arguments = {
        "prompt": args.prompt,
        "aspect_ratio": ASPECT_RATIO[args.image_size],
        "num_images": args.num_images,
    }
    if args.seed is not None:
        arguments["seed"] = args.seed
    notes = [
        f"image_size {args.image_size} was sent as aspect_ratio {arguments['aspect_ratio']}: "
        f"{ALIAS} chooses the resolution itself (up to 4 megapixels)"
    ]
    if getattr(args, "negative_prompt", None):
        notes.append(f"negative_prompt was not sent: {ALIAS} does not take one")
    return EndpointCall(arguments, tuple(notes))


MODELS = [
    Model(
        ALIAS,
        "fal-ai/flux-pro/v1.1-ultra",
        "generate_image",
        "FLUX1.1 [pro] ultra: up to 4 MP, photorealistic",
        ultra_input,
        # Its tool is another pack's: said here, so the category is known even without that pack.
        category="image",
        field_arguments={"aspect_ratio": "image_size"},
    ),
]

PRICES = [PriceHint("fal-ai/flux-pro/v1.1-ultra", 0.06, "image")]

RECOMMENDATIONS = [
    Recommendation(
        ALIAS,
        ("high resolution", "4k", "large", "print", "wallpaper", "poster"),
        "The largest, most detailed FLUX images",
        "image",
    ),
]
