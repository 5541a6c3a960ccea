"""The sandbox's endpoint catalogue: input schemas, prices and output builders.

One compact `Endpoint(...)` per fal endpoint. Field names, types and defaults follow
/work/shared/reference/fal-endpoints.md; numeric ranges and media limits are the
sandbox's own choices (documented here, enforced by `validate`). Validation is
deliberately stricter than fal: unknown fields are rejected, so a misspelt
argument fails a test instead of being silently ignored.

Plain stdlib only: the platform routes and tests import this without PIL.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

_NO_DEFAULT = object()

IMAGE_SIZES = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
IMAGE_SIZE_MIN, IMAGE_SIZE_MAX = 64, 14142

# Whisper's language codes (fal accepts exactly these).
LANGUAGES = tuple(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi "
    "hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn "
    "no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi "
    "yi yo yue zh".split()
)

# Shared descriptions, so the tables below stay one line per field.
DOCS = {
    "prompt": "The prompt to generate from.",
    "seed": "Seed for reproducible output; random when omitted.",
    "image_size": "Output size: a preset name or {width, height}.",
    "video_size": "Video frame size: a preset name or {width, height}.",
    "num_images": "Number of images to generate.",
    "num_inference_steps": "Number of denoising steps.",
    "guidance_scale": "How closely the output follows the prompt (CFG scale).",
    "enable_safety_checker": "Run the safety checker on the output.",
    "sync_mode": "Return media inline as data URIs instead of CDN URLs.",
    "output_format": "File format of the output image.",
    "format": "File format of the output image.",
    "acceleration": "Speed/quality trade-off.",
    "negative_prompt": "What the output should avoid.",
    "image_url": "URL (or data URI) of the input image.",
    "mask_url": "URL of the mask image: white = area to repaint.",
    "video_url": "URL of the input video.",
    "audio_url": "URL of the audio file to transcribe.",
    "strength": "How much to change the input (0 keeps it, 1 replaces it).",
    "aspect_ratio": "Aspect ratio of the output.",
    "safety_tolerance": "Safety tolerance, 1 (strictest) to 6 (most permissive).",
    "enhance_prompt": "Let the model rewrite the prompt first.",
    "loras": "LoRA weights to apply: a list of {path, scale}.",
    "fps": "Frames per second of the output video.",
    "motions": "Camera motions to apply.",
    "language": "Language of the audio (ISO 639-1); detected when omitted.",
    "task": "Transcribe in the source language or translate to English.",
}


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # string | integer | number | boolean | array | object | image_size
    default: Any = _NO_DEFAULT
    required: bool = False
    enum: tuple | None = None
    ge: float | None = None
    le: float | None = None
    items: str | None = None  # item type of an array
    item_enum: tuple | None = None
    min_items: int | None = None
    description: str = ""
    media: str | None = None  # "image" | "audio" | "video": a URL the job downloads

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    @property
    def doc(self) -> str:
        return self.description or DOCS.get(self.name, "")


def F(name: str, type: str, default: Any = _NO_DEFAULT, **kw: Any) -> Field:
    return Field(name, type, default, **kw)


def R(name: str, type: str, **kw: Any) -> Field:
    """A required field."""
    return Field(name, type, required=True, **kw)


@dataclass(frozen=True)
class Endpoint:
    id: str
    name: str
    category: str
    description: str
    price: float  # USD per unit
    unit: str  # image | megapixel | second | video | request
    fields: tuple[Field, ...]
    build: str  # output builder in generate.py
    outputs: tuple[str, ...]  # top-level output fields, as in the reference
    per_call: float = 1  # typical units per call (historical price estimates)
    tags: tuple[str, ...] = ()
    highlighted: bool = False
    opts: dict = field(default_factory=dict)  # builder parameters

    @property
    def app(self) -> str:
        return "/".join(self.id.split("/")[:2])


# --- shared field definitions ------------------------------------------------------

PROMPT = R("prompt", "string")
SEED = F("seed", "integer")
SYNC = F("sync_mode", "boolean", False)
SAFETY = F("enable_safety_checker", "boolean", True)
NUM_IMAGES = F("num_images", "integer", 1, ge=1, le=4)
IMAGE_URL = R("image_url", "string", media="image")
JPEG_PNG = F("output_format", "string", "jpeg", enum=("jpeg", "png"))
ACCEL = F("acceleration", "string", "none", enum=("none", "regular", "high"))
LORAS = F("loras", "array", items="object")
SAFETY_TOLERANCE = F("safety_tolerance", "string", "2", enum=("1", "2", "3", "4", "5", "6"))
ENHANCE = F("enhance_prompt", "boolean", False)
ASPECTS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
MOTIONS = ("zoom-out", "zoom-in", "pan-left", "pan-right", "tilt-up", "tilt-down")
ANIMATEDIFF_NEGATIVE = "(bad quality, worst quality:1.2), ugly faces, bad anime"
WAN_NEGATIVE = (
    "bright colors, overexposed, static, blurred details, subtitles, style, artwork, painting, picture, "
    "still, overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra "
    "fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, malformed limbs, fused "
    "fingers, still picture, cluttered background, three legs, many people in the background, walking "
    "backwards"
)


def image_size(default: Any = _NO_DEFAULT, name: str = "image_size") -> Field:
    return F(name, "image_size", default)


def steps(default: int, le: int = 50) -> Field:
    return F("num_inference_steps", "integer", default, ge=1, le=le)


def guidance(default: float, ge: float = 0, le: float = 20, name: str = "guidance_scale") -> Field:
    return F(name, "number", default, ge=ge, le=le)


def flux_text_to_image(steps_default: int) -> tuple[Field, ...]:
    return (
        ACCEL, SAFETY, guidance(3.5, ge=1), image_size("landscape_4_3"), NUM_IMAGES,
        steps(steps_default), JPEG_PNG, PROMPT, SEED, SYNC,
    )


IMAGES_OUT = ("images", "timings", "seed", "has_nsfw_concepts", "prompt")

# --- the catalogue -----------------------------------------------------------------
# Media limits chosen by the sandbox: images are capped at 16.7 MP (4096x4096, larger
# requests are scaled down keeping the aspect ratio); video frames are at most 256 px
# on the long side and 600 frames; audio is 16 kHz mono 16-bit WAV.

ENDPOINTS_LIST: tuple[Endpoint, ...] = (
    # text-to-image
    Endpoint(
        "fal-ai/flux/schnell", "FLUX.1 [schnell]", "text-to-image",
        "Fast FLUX text-to-image model: good images in 1-4 steps.", 0.003, "image",
        flux_text_to_image(28), "text_to_image", IMAGES_OUT,
        tags=("flux", "fast", "text-to-image"), highlighted=True,
    ),
    Endpoint(
        "fal-ai/flux/dev", "FLUX.1 [dev]", "text-to-image",
        "12B-parameter FLUX model for high-quality text-to-image generation.", 0.025, "image",
        flux_text_to_image(28), "text_to_image", IMAGES_OUT,
        tags=("flux", "quality"), highlighted=True,
    ),
    Endpoint(
        "fal-ai/flux-pro/v1.1", "FLUX1.1 [pro]", "text-to-image",
        "FLUX1.1 [pro]: faster and better prompt adherence than FLUX.1 [pro].", 0.04, "image",
        (ENHANCE, image_size("landscape_4_3"), NUM_IMAGES, JPEG_PNG, PROMPT, SAFETY_TOLERANCE, SEED, SYNC),
        "text_to_image", IMAGES_OUT, tags=("flux", "pro"),
    ),
    Endpoint(
        "fal-ai/flux-pro/v1.1-ultra", "FLUX1.1 [pro] ultra", "text-to-image",
        "FLUX1.1 [pro] in ultra mode: up to 4 MP images with an optional image prompt.", 0.06, "image",
        (
            F("aspect_ratio", "string", "16:9", enum=ASPECTS), ENHANCE,
            F("image_prompt_strength", "number", 0.1, ge=0, le=1,
              description="How strongly the image prompt steers the result."),
            F("image_url", "string", media="image", description="Optional image prompt."),
            NUM_IMAGES, JPEG_PNG, PROMPT,
            F("raw", "boolean", False, description="Less processed, more natural-looking images."),
            SAFETY_TOLERANCE, SEED, SYNC,
        ),
        "text_to_image", IMAGES_OUT, tags=("flux", "pro", "ultra"), highlighted=True,
    ),
    Endpoint(
        "fal-ai/fast-sdxl", "Fast SDXL", "text-to-image",
        "Stable Diffusion XL, optimised for speed.", 0.002, "image",
        (
            F("embeddings", "array", items="object", description="Textual inversion embeddings."),
            SAFETY, F("expand_prompt", "boolean", False, description="Expand the prompt with an LLM."),
            F("format", "string", "jpeg", enum=("jpeg", "png")), guidance(7.5),
            image_size("square_hd"), LORAS, F("negative_prompt", "string", ""), NUM_IMAGES, steps(25),
            PROMPT, F("request_id", "string", "", description="Optional client-side request id."),
            F("safety_checker_version", "string", "v1", enum=("v1", "v2")), SEED, SYNC,
        ),
        "text_to_image", IMAGES_OUT, tags=("sdxl", "fast"),
    ),
    Endpoint(
        "fal-ai/stable-diffusion-v35-large", "Stable Diffusion 3.5 Large", "text-to-image",
        "Stability AI's 8B MMDiT text-to-image model.", 0.065, "image",
        (
            F("controlnet", "object", description="ControlNet settings."), SAFETY, guidance(3.5),
            image_size(), F("ip_adapter", "object", description="IP-Adapter settings."), LORAS,
            F("negative_prompt", "string", ""), NUM_IMAGES, steps(28), JPEG_PNG, PROMPT, SEED, SYNC,
        ),
        "text_to_image", IMAGES_OUT, tags=("stable-diffusion",), opts={"size": "landscape_4_3"},
    ),
    Endpoint(
        "fal-ai/stable-diffusion-v3-medium", "Stable Diffusion 3 Medium", "text-to-image",
        "Stability AI's 2B MMDiT text-to-image model.", 0.035, "image",
        (
            SAFETY, guidance(5), image_size("square_hd"), F("negative_prompt", "string", ""), NUM_IMAGES,
            steps(28), PROMPT, F("prompt_expansion", "boolean", False, description="Expand the prompt."),
            SEED, SYNC,
        ),
        "text_to_image", (*IMAGES_OUT, "num_images"), tags=("stable-diffusion",),
    ),
    # image-to-image and editing
    Endpoint(
        "fal-ai/flux/dev/image-to-image", "FLUX.1 [dev] image-to-image", "image-to-image",
        "Transform an image with FLUX.1 [dev] guided by a prompt.", 0.03, "image",
        (
            ACCEL, SAFETY, guidance(3.5, ge=1), IMAGE_URL, NUM_IMAGES, steps(40), JPEG_PNG, PROMPT, SEED,
            F("strength", "number", 0.95, ge=0.01, le=1), SYNC,
        ),
        "image_to_image", IMAGES_OUT, tags=("flux", "image-to-image"),
    ),
    Endpoint(
        "fal-ai/birefnet/v2", "BiRefNet v2 background removal", "image-to-image",
        "Remove the background of an image (transparent PNG/WebP output).", 0.001, "image",
        (
            IMAGE_URL, F("mask_only", "boolean", False, description="Return only the mask."),
            F("model", "string", "General Use (Light)", enum=(
                "General Use (Light)", "General Use (Light 2K)", "General Use (Heavy)", "Matting",
                "Portrait", "General Use (Dynamic)",
            ), description="Model variant."),
            F("operating_resolution", "string", "1024x1024", enum=("1024x1024", "2048x2048", "2304x2304"),
              description="Resolution the model works at."),
            F("output_format", "string", "png", enum=("webp", "png", "gif")),
            F("output_mask", "boolean", False, description="Also return the mask image."),
            F("refine_foreground", "boolean", True, description="Refine the foreground edges."), SYNC,
        ),
        "remove_background", ("image", "mask_image"), tags=("background-removal", "utility"),
    ),
    Endpoint(
        "fal-ai/clarity-upscaler", "Clarity Upscaler", "image-to-image",
        "Creative upscaler that adds detail while enlarging an image.", 0.03, "megapixel",
        (
            F("creativity", "number", 0.35, ge=0, le=1, description="How much new detail to invent."),
            SAFETY, guidance(4), IMAGE_URL,
            F("negative_prompt", "string", "(worst quality, low quality, normal quality:2)"),
            steps(18), F("prompt", "string", "masterpiece, best quality, highres"),
            F("resemblance", "number", 0.6, ge=0, le=1, description="How closely to follow the input."),
            SEED, F("upscale_factor", "number", 2, ge=1, le=4, description="Enlargement factor."),
        ),
        "upscale", ("image", "seed", "timings"), per_call=4, tags=("upscale",),
    ),
    Endpoint(
        "fal-ai/aura-sr", "AuraSR", "image-to-image",
        "GAN-based 4x super-resolution upscaler.", 0.01, "image",
        (
            F("checkpoint", "string", "v1", enum=("v1", "v2"), description="Model checkpoint."), IMAGE_URL,
            F("overlapping_tiles", "boolean", False, description="Overlap tiles to hide seams."),
            F("upscale_factor", "number", 4, enum=(4,), description="Enlargement factor (only 4)."),
        ),
        "upscale", ("image", "timings"), tags=("upscale",),
    ),
    Endpoint(
        "fal-ai/flux-2/edit", "FLUX.2 [dev] edit", "image-to-image",
        "Edit one or more reference images with a prompt (FLUX.2).", 0.025, "image",
        (
            F("acceleration", "string", "regular", enum=("none", "regular", "high")),
            F("enable_prompt_expansion", "boolean", False, description="Expand the prompt."), SAFETY,
            guidance(2.5), image_size(),
            R("image_urls", "array", items="string", min_items=1, media="image",
              description="URLs of the images to edit."),
            NUM_IMAGES, steps(28), F("output_format", "string", "png", enum=("jpeg", "png", "webp")),
            PROMPT, SEED, SYNC,
        ),
        "image_to_image", IMAGES_OUT, tags=("flux", "edit"), highlighted=True,
    ),
    Endpoint(
        "fal-ai/flux-pro/kontext", "FLUX.1 Kontext [pro]", "image-to-image",
        "Edit an image with a text instruction, keeping the rest intact.", 0.04, "image",
        (
            F("aspect_ratio", "string", enum=ASPECTS), ENHANCE, guidance(3.5, ge=1), IMAGE_URL, NUM_IMAGES,
            JPEG_PNG, PROMPT, SAFETY_TOLERANCE, SEED, SYNC,
        ),
        "image_to_image", IMAGES_OUT, tags=("flux", "kontext", "edit"), highlighted=True,
    ),
    Endpoint(
        "fal-ai/flux-kontext-lora/inpaint", "FLUX Kontext LoRA inpaint", "image-to-image",
        "Inpaint the masked area guided by a reference image (FLUX Kontext with LoRA).", 0.035, "image",
        (
            ACCEL, SAFETY, guidance(2.5), IMAGE_URL, LORAS, R("mask_url", "string", media="image"),
            NUM_IMAGES, steps(30), F("output_format", "string", "png", enum=("jpeg", "png")), PROMPT,
            R("reference_image_url", "string", media="image", description="URL of the reference image."),
            SEED, F("strength", "number", 0.88, ge=0.01, le=1), SYNC,
        ),
        "image_to_image", IMAGES_OUT, tags=("flux", "inpainting"),
    ),
    Endpoint(
        "fal-ai/flux-lora/inpainting", "FLUX LoRA inpainting", "image-to-image",
        "Inpaint the masked area of an image with FLUX.1 [dev] and LoRAs.", 0.035, "image",
        (
            F("acceleration", "string", "none", enum=("none", "regular")), SAFETY, guidance(3.5),
            image_size(), IMAGE_URL, LORAS, R("mask_url", "string", media="image"), NUM_IMAGES, steps(28),
            JPEG_PNG, PROMPT, SEED, F("strength", "number", 0.85, ge=0.01, le=1), SYNC,
        ),
        "image_to_image", IMAGES_OUT, tags=("flux", "inpainting", "lora"),
    ),
    Endpoint(
        "fal-ai/image-apps-v2/outpaint", "Outpaint", "image-to-image",
        "Extend an image beyond its borders.", 0.035, "image",
        (
            SAFETY,
            *(F(f"expand_{side}", "integer", 0, ge=0, le=700, description=f"Pixels to add at the {side}.")
              for side in ("bottom", "left", "right", "top")),
            IMAGE_URL, NUM_IMAGES, F("output_format", "string", "png", enum=("png", "jpeg", "jpg", "webp")),
            F("prompt", "string", ""), SEED, SYNC,
            F("zoom_out_percentage", "number", 20, ge=0, le=90,
              description="Zoom out by this percentage when no expand_* is given."),
        ),
        "outpaint", ("images", "seed"), tags=("outpainting",),
    ),
    # image-to-video
    Endpoint(
        "fal-ai/stable-video", "Stable Video Diffusion", "image-to-video",
        "Animate an image into a short clip (25 frames).", 0.075, "video",
        (
            F("cond_aug", "number", 0.02, ge=0, le=10, description="Noise added to the conditioning image."),
            F("fps", "integer", 25, ge=10, le=100), IMAGE_URL,
            F("motion_bucket_id", "integer", 127, ge=1, le=255, description="Amount of motion."), SEED,
        ),
        "video", ("seed", "video"), tags=("svd",), opts={"timing": lambda a: (25, a["fps"])},
    ),
    Endpoint(
        "fal-ai/fast-svd-lcm", "Fast SVD (LCM)", "image-to-video",
        "Stable Video Diffusion with LCM: an image to a clip in a few steps.", 0.02, "video",
        (
            F("cond_aug", "number", 0.02, ge=0, le=10, description="Noise added to the conditioning image."),
            F("fps", "integer", 10, ge=1, le=100), IMAGE_URL,
            F("motion_bucket_id", "integer", 127, ge=1, le=255, description="Amount of motion."), SEED,
            F("steps", "integer", 4, ge=1, le=20, description="Number of LCM steps."),
        ),
        "video", ("seed", "video"), tags=("svd", "fast"), opts={"timing": lambda a: (25, a["fps"])},
    ),
    Endpoint(
        "fal-ai/kling-video/v2.1/standard/image-to-video", "Kling 2.1 Standard image-to-video",
        "image-to-video", "Kling 2.1 (standard): animate an image into a 5 or 10 s video at 24 fps.",
        0.05, "second",
        (
            PROMPT, IMAGE_URL,  # no aspect_ratio: the video keeps the image's
            F("duration", "string", "5", enum=("5", "10"), description="Length in seconds."),
            F("negative_prompt", "string", "blur, distort, and low quality"),
            F("cfg_scale", "number", 0.5, ge=0, le=1, description="How closely to follow the prompt."),
            F("tail_image_url", "string", media="image", description="Optional image for the last frame."),
        ),
        "video", ("video",), per_call=5, tags=("kling",), highlighted=True,
        opts={"timing": lambda a: (int(a["duration"]) * 24, 24)},
    ),
    Endpoint(
        "fal-ai/wan-i2v", "Wan 2.1 image-to-video", "image-to-video",
        "Wan 2.1: animate an image (81-100 frames).", 0.4, "video",
        (
            F("acceleration", "string", "regular", enum=("none", "regular")),
            F("aspect_ratio", "string", "auto", enum=("auto", "16:9", "9:16", "1:1")),
            F("enable_prompt_expansion", "boolean", False, description="Expand the prompt."),
            F("enable_safety_checker", "boolean", False),
            F("frames_per_second", "integer", 16, ge=5, le=24, description="Frames per second."),
            guidance(5, ge=1, le=10, name="guide_scale"), IMAGE_URL,
            F("negative_prompt", "string", WAN_NEGATIVE),
            F("num_frames", "integer", 81, ge=81, le=100, description="Number of frames."), steps(30, le=40),
            PROMPT,
            F("resolution", "string", "720p", enum=("480p", "720p"), description="Output resolution."),
            SEED, F("shift", "number", 5, ge=1, le=10, description="Flow shift."),
        ),
        "video", ("seed", "video"), tags=("wan",),
        opts={"timing": lambda a: (a["num_frames"], a["frames_per_second"])},
    ),
    # text-to-video
    Endpoint(
        "fal-ai/fast-animatediff/text-to-video", "AnimateDiff text-to-video", "text-to-video",
        "Short animated clips from a prompt with AnimateDiff.", 0.02, "video",
        (
            F("fps", "integer", 8, ge=1, le=16), guidance(7.5),
            F("motions", "array", items="string", item_enum=MOTIONS),
            F("negative_prompt", "string", ANIMATEDIFF_NEGATIVE),
            F("num_frames", "integer", 16, ge=1, le=32, description="Number of frames."), steps(25), PROMPT,
            SEED, image_size("square", name="video_size"),
        ),
        "video", ("seed", "video"), tags=("animatediff",),
        opts={"timing": lambda a: (a["num_frames"], a["fps"])},
    ),
    Endpoint(
        "fal-ai/kling-video/v2.1/master/text-to-video", "Kling 2.1 Master text-to-video", "text-to-video",
        "Kling 2.1 (master): 5 or 10 s videos from a prompt at 24 fps.", 0.28, "second",
        (
            PROMPT, F("duration", "string", "5", enum=("5", "10"), description="Length in seconds."),
            F("aspect_ratio", "string", "16:9", enum=("16:9", "9:16", "1:1")),
            F("negative_prompt", "string", "blur, distort, and low quality"),
            F("cfg_scale", "number", 0.5, ge=0, le=1, description="How closely to follow the prompt."),
        ),
        "video", ("video",), per_call=5, tags=("kling",), highlighted=True,
        opts={"timing": lambda a: (int(a["duration"]) * 24, 24)},
    ),
    Endpoint(
        "fal-ai/wan-t2v", "Wan 2.1 text-to-video", "text-to-video",
        "Wan 2.1: 81-frame videos from a prompt.", 0.4, "video",
        (
            PROMPT, F("negative_prompt", "string", ""),
            F("num_frames", "integer", 81, ge=81, le=100, description="Number of frames."),
            F("frames_per_second", "integer", 16, ge=5, le=24, description="Frames per second."),
            F("resolution", "string", "480p", enum=("480p", "720p"), description="Output resolution."),
            F("aspect_ratio", "string", "16:9", enum=("16:9", "9:16")), SEED,
        ),
        "video", ("seed", "video"), tags=("wan",),
        opts={"timing": lambda a: (a["num_frames"], a["frames_per_second"])},
    ),
    # video-to-video
    Endpoint(
        "fal-ai/fast-animatediff/video-to-video", "AnimateDiff video-to-video", "video-to-video",
        "Restyle the first seconds of a video with AnimateDiff.", 0.02, "video",
        (
            F("first_n_seconds", "integer", 3, ge=2, le=12, description="Seconds of the input to use."),
            F("fps", "integer", 8, ge=1, le=16), guidance(7.5),
            F("motions", "array", items="string", item_enum=MOTIONS),
            F("negative_prompt", "string", ANIMATEDIFF_NEGATIVE), steps(25), PROMPT, SEED,
            F("strength", "number", 0.7, ge=0.1, le=1), R("video_url", "string", media="video"),
        ),
        "video", ("seed", "video"), tags=("animatediff",),
        opts={"timing": lambda a: (a["first_n_seconds"] * a["fps"], a["fps"])},
    ),
    Endpoint(
        "decart/lucy-edit/dev", "Lucy Edit [dev]", "video-to-video",
        "Edit a video with a text instruction; output keeps the input's length.", 0.04, "second",
        (
            F("enhance_prompt", "boolean", True), PROMPT, F("sync_mode", "boolean", True),
            R("video_url", "string", media="video"),
        ),
        "video", ("video",), per_call=5, tags=("video-editing",),
        opts={"timing": lambda a: (None, 24)},  # None: as many frames as the input video
    ),
    # audio
    Endpoint(
        "fal-ai/stable-audio", "Stable Audio Open", "text-to-audio",
        "Music and sound effects from a prompt, up to 47 s.", 0.001, "second",
        (
            PROMPT, F("seconds_start", "integer", 0, ge=0, le=47, description="Start offset in seconds."),
            F("seconds_total", "integer", 30, ge=1, le=47, description="Length in seconds (max 47)."),
            F("steps", "integer", 100, ge=1, le=1000, description="Number of denoising steps."),
        ),
        "audio", ("audio_file",), per_call=30, tags=("music", "sfx"),
        opts={"seconds": lambda a: a["seconds_total"]},
    ),
    Endpoint(
        "fal-ai/lyria2", "Lyria 2", "text-to-audio",
        "Google's Lyria 2: 30 s of music from a prompt.", 0.1, "request",
        (F("negative_prompt", "string", "low quality"), PROMPT, SEED),
        "audio", ("audio",), tags=("music",), opts={"seconds": lambda a: 30},
    ),
    Endpoint(
        "CassetteAI/music-generator", "CassetteAI music generator", "text-to-audio",
        "Fast music generation, 10 s to 3 min.", 0.002, "second",
        (R("duration", "integer", ge=10, le=180, description="Length in seconds (10-180)."), PROMPT),
        "audio", ("audio_file",), per_call=30, tags=("music", "fast"),
        opts={"seconds": lambda a: a["duration"]},
    ),
    Endpoint(
        "fal-ai/minimax-music", "MiniMax Music", "text-to-audio",
        "Songs from a prompt in the style of a reference track (about 30 s).", 0.035, "request",
        (
            R("prompt", "string", description="Lyrics; use ## to separate sections."),
            R("reference_audio_url", "string", media="audio", description="URL of a reference track."),
        ),
        "audio", ("audio",), tags=("music", "song"), opts={"seconds": lambda a: 30},
    ),
    Endpoint(
        "fal-ai/ace-step", "ACE-Step", "text-to-audio",
        "Songs with lyrics from tags, 5-240 s.", 0.0002, "second",
        (
            F("duration", "number", 60, ge=5, le=240, description="Length in seconds."),
            F("granularity_scale", "integer", 10, ge=-100, le=100, description="Granularity scale."),
            F("guidance_interval", "number", 0.5, ge=0, le=1, description="Guidance interval."),
            F("guidance_interval_decay", "number", 0, ge=0, le=1, description="Guidance interval decay."),
            guidance(15, le=200), F("guidance_type", "string", "apg", enum=("cfg", "apg", "cfg_star")),
            F("lyric_guidance_scale", "number", 1.5, ge=0, le=10, description="Lyric guidance scale."),
            F("lyrics", "string", "", description="Lyrics; [inst] for an instrumental."),
            F("minimum_guidance_scale", "number", 3, ge=0, le=200, description="Minimum guidance scale."),
            F("number_of_steps", "integer", 27, ge=3, le=60, description="Number of steps."),
            F("scheduler", "string", "euler", enum=("euler", "heun")), SEED,
            F("tag_guidance_scale", "number", 5, ge=0, le=10, description="Tag guidance scale."),
            R("tags", "string", description="Comma-separated genre/mood/instrument tags."),
        ),
        "audio", ("audio", "lyrics", "seed", "tags"), per_call=60, tags=("music", "song"),
        opts={"seconds": lambda a: a["duration"]},
    ),
    Endpoint(
        "fal-ai/kokoro/american-english", "Kokoro TTS (American English)", "text-to-speech",
        "Lightweight, natural-sounding text-to-speech.", 0.02, "request",
        (
            PROMPT, F("voice", "string", "af_heart", enum=(
                "af_heart", "af_bella", "af_nicole", "af_sarah", "am_adam", "am_michael", "am_fenrir",
            ), description="Voice to speak with."),
            F("speed", "number", 1, ge=0.1, le=5, description="Speaking speed multiplier."),
        ),
        "speech", ("audio",), tags=("tts",), highlighted=True,
    ),
    Endpoint(
        "fal-ai/whisper", "Whisper", "speech-to-text",
        "OpenAI Whisper speech recognition with timestamps and optional diarization.", 0.00125, "second",
        (
            R("audio_url", "string", media="audio"),
            F("batch_size", "integer", 64, ge=1, le=64, description="Batch size."),
            F("chunk_level", "string", "segment", enum=("none", "segment", "word"),
              description="Granularity of the returned chunks."),
            F("diarize", "boolean", False, description="Label speakers."),
            F("language", "string", enum=LANGUAGES),
            F("num_speakers", "integer", ge=1, le=10, description="Expected number of speakers."),
            F("prompt", "string", "", description="Text to guide the transcription."),
            F("task", "string", "transcribe", enum=("transcribe", "translate")),
        ),
        "transcribe", ("text", "chunks", "inferred_languages", "diarization_segments"),
        per_call=60, tags=("asr", "transcription"),
    ),
    Endpoint(
        "fal-ai/wizper", "Wizper (Whisper v3, fast)", "speech-to-text",
        "Whisper v3 large, optimised by fal for speed.", 0.0005, "second",
        (
            R("audio_url", "string", media="audio"),
            F("chunk_level", "string", "segment", description="Granularity of the returned chunks."),
            F("language", "string", "en", enum=LANGUAGES),
            F("max_segment_len", "integer", 29, ge=10, le=29, description="Maximum segment length (s)."),
            F("merge_chunks", "boolean", True, description="Merge adjacent chunks."),
            F("task", "string", "transcribe", enum=("transcribe", "translate")),
            F("version", "string", "3", description="Whisper version."),
        ),
        "transcribe", ("text", "chunks", "languages"), per_call=60, tags=("asr", "transcription", "fast"),
    ),
)

ENDPOINTS: dict[str, Endpoint] = {e.id: e for e in ENDPOINTS_LIST}

# Listed by the platform API so pagination and search have something to chew on,
# but not runnable (submit answers 404): (id, display name, category, unit price, unit, tags).
EXTRA_MODELS: tuple[tuple[str, str, str, float, str, tuple[str, ...]], ...] = (
    ("fal-ai/recraft-v3", "Recraft V3", "text-to-image", 0.04, "image", ("vector", "design")),
    ("fal-ai/ideogram/v2", "Ideogram V2", "text-to-image", 0.08, "image", ("typography",)),
    ("fal-ai/ideogram/v3", "Ideogram V3", "text-to-image", 0.06, "image", ("typography",)),
    ("fal-ai/imagen4/preview", "Imagen 4 (preview)", "text-to-image", 0.05, "image", ("google",)),
    ("fal-ai/hidream-i1-full", "HiDream-I1 Full", "text-to-image", 0.05, "image", ("quality",)),
    ("fal-ai/sana", "Sana", "text-to-image", 0.001, "megapixel", ("fast",)),
    ("fal-ai/lumina-image/v2", "Lumina Image 2", "text-to-image", 0.025, "image", ()),
    ("fal-ai/flux-lora", "FLUX.1 [dev] with LoRAs", "text-to-image", 0.035, "megapixel", ("flux", "lora")),
    ("fal-ai/flux-general", "FLUX.1 [dev] general", "text-to-image", 0.075, "megapixel", ("flux",)),
    ("fal-ai/omnigen-v1", "OmniGen v1", "image-to-image", 0.1, "megapixel", ("edit",)),
    ("fal-ai/photomaker", "PhotoMaker", "image-to-image", 0.03, "image", ("portrait",)),
    ("fal-ai/face-to-sticker", "Face to Sticker", "image-to-image", 0.03, "image", ("sticker",)),
    ("fal-ai/bria/background/remove", "Bria background removal", "image-to-image", 0.018, "image",
     ("background-removal",)),
    ("fal-ai/imageutils/rembg", "Rembg", "image-to-image", 0.001, "image", ("background-removal",)),
    ("fal-ai/esrgan", "ESRGAN upscaler", "image-to-image", 0.002, "image", ("upscale",)),
    ("fal-ai/ccsr", "CCSR upscaler", "image-to-image", 0.01, "megapixel", ("upscale",)),
    ("fal-ai/creative-upscaler", "Creative Upscaler", "image-to-image", 0.02, "megapixel", ("upscale",)),
    ("fal-ai/sam2/image", "Segment Anything 2", "image-to-image", 0.005, "image", ("segmentation",)),
    ("fal-ai/imageutils/depth", "Depth map", "image-to-image", 0.001, "image", ("depth",)),
    ("fal-ai/kling-video/v1.6/pro/image-to-video", "Kling 1.6 Pro image-to-video", "image-to-video",
     0.095, "second", ("kling",)),
    ("fal-ai/kling-video/v2/master/image-to-video", "Kling 2.0 Master image-to-video", "image-to-video",
     0.28, "second", ("kling",)),
    ("fal-ai/minimax/hailuo-02/standard/image-to-video", "Hailuo 02 Standard image-to-video",
     "image-to-video", 0.045, "second", ("minimax",)),
    ("fal-ai/luma-dream-machine", "Luma Dream Machine", "text-to-video", 0.5, "video", ("luma",)),
    ("fal-ai/minimax/video-01", "MiniMax Video-01", "text-to-video", 0.5, "video", ("minimax",)),
    ("fal-ai/hunyuan-video", "Hunyuan Video", "text-to-video", 0.4, "video", ("open-source",)),
    ("fal-ai/ltx-video", "LTX Video", "text-to-video", 0.02, "video", ("fast",)),
    ("fal-ai/veo3", "Veo 3", "text-to-video", 0.75, "second", ("google", "audio")),
    ("fal-ai/bytedance/seedance/v1/lite/text-to-video", "Seedance 1.0 Lite", "text-to-video", 0.18,
     "video", ("bytedance",)),
    ("fal-ai/mochi-v1", "Mochi 1", "text-to-video", 0.4, "video", ("open-source",)),
    ("fal-ai/cogvideox-5b", "CogVideoX-5B", "text-to-video", 0.2, "video", ("open-source",)),
    ("fal-ai/video-upscaler", "Video Upscaler", "video-to-video", 0.0015, "megapixel", ("upscale",)),
    ("fal-ai/sync-lipsync", "Sync Lipsync", "video-to-video", 0.7, "request", ("lipsync",)),
    ("fal-ai/latentsync", "LatentSync", "video-to-video", 0.2, "request", ("lipsync",)),
    ("fal-ai/mmaudio-v2", "MMAudio V2", "video-to-audio", 0.001, "second", ("sfx",)),
    ("fal-ai/f5-tts", "F5 TTS", "text-to-speech", 0.05, "request", ("tts", "voice-cloning")),
    ("fal-ai/playai/tts/v3", "PlayAI TTS v3", "text-to-speech", 0.03, "request", ("tts",)),
    ("fal-ai/chatterbox/text-to-speech", "Chatterbox TTS", "text-to-speech", 0.025, "request", ("tts",)),
    ("fal-ai/dia-tts", "Dia TTS", "text-to-speech", 0.04, "request", ("tts", "dialogue")),
    ("fal-ai/elevenlabs/speech-to-text", "ElevenLabs Scribe", "speech-to-text", 0.03, "request", ("asr",)),
    ("fal-ai/florence-2-large/caption", "Florence-2 caption", "image-to-text", 0.001, "request",
     ("caption", "vision")),
    ("fal-ai/flux-realism", "FLUX Realism LoRA (deprecated)", "text-to-image", 0.035, "megapixel",
     ("flux", "deprecated")),
    ("fal-ai/lora", "Stable Diffusion with LoRAs (deprecated)", "text-to-image", 0.02, "image",
     ("deprecated",)),
)

UPDATED_AT = "2025-11-01T00:00:00Z"


# --- validation ---------------------------------------------------------------------


def _err(loc: list, type_: str, msg: str, value: Any, **ctx: Any) -> dict:
    error = {"loc": ["body", *loc], "msg": msg, "type": type_, "input": value}
    if ctx:
        error["ctx"] = ctx
    return error


def _expected(options: tuple) -> str:
    quoted = [repr(o) for o in options]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


_SCALARS = {  # type -> (accepts, pydantic error type, message)
    "string": (lambda v: isinstance(v, str), "string_type", "Input should be a valid string"),
    "boolean": (lambda v: isinstance(v, bool), "bool_type", "Input should be a valid boolean"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "int_type",
                "Input should be a valid integer"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "float_type",
               "Input should be a valid number"),
    "object": (lambda v: isinstance(v, dict), "dict_type", "Input should be a valid dictionary"),
}


def _check_scalar(type_: str, value: Any, loc: list) -> tuple[Any, dict | None]:
    """Returns (coerced value, error). Stricter than pydantic's lax mode: no strings as numbers."""
    if type_ == "integer" and isinstance(value, float):
        if value.is_integer():
            return int(value), None
        return value, _err(loc, "int_from_float",
                           "Input should be a valid integer, got a number with a fractional part", value)
    accepts, error_type, message = _SCALARS[type_]
    return value, None if accepts(value) else _err(loc, error_type, message, value)


def _check_image_size(value: Any, loc: list) -> list[dict]:
    if isinstance(value, str):
        if value in IMAGE_SIZES:
            return []
        return [_err(loc, "literal_error", f"Input should be {_expected(tuple(IMAGE_SIZES))}", value,
                     expected=_expected(tuple(IMAGE_SIZES)))]
    if not isinstance(value, dict):
        return [_err(loc, "model_type",
                     "Input should be a preset name or an object with width and height", value)]
    errors = [_err([*loc, k], "extra_forbidden", "Extra inputs are not permitted", v)
              for k, v in value.items() if k not in ("width", "height")]
    for key in ("width", "height"):
        if key not in value:
            errors.append(_err([*loc, key], "missing", "Field required", value))
            continue
        number, error = _check_scalar("integer", value[key], [*loc, key])
        if error:
            errors.append(error)
        elif number < IMAGE_SIZE_MIN:
            errors.append(_err([*loc, key], "greater_than_equal",
                               f"Input should be greater than or equal to {IMAGE_SIZE_MIN}", number,
                               ge=IMAGE_SIZE_MIN))
        elif number > IMAGE_SIZE_MAX:
            errors.append(_err([*loc, key], "less_than_equal",
                               f"Input should be less than or equal to {IMAGE_SIZE_MAX}", number,
                               le=IMAGE_SIZE_MAX))
    return errors


def _check(f: Field, value: Any) -> tuple[Any, list[dict]]:
    loc = [f.name]
    if f.type == "image_size":
        return value, _check_image_size(value, loc)
    if f.type == "array":
        if not isinstance(value, list):
            return value, [_err(loc, "list_type", "Input should be a valid list", value)]
        errors = []
        if f.min_items and len(value) < f.min_items:
            errors.append(_err(loc, "too_short", f"List should have at least {f.min_items} item after "
                               f"validation, not {len(value)}", value, min_length=f.min_items))
        items = []
        for i, item in enumerate(value):
            item, error = _check_scalar(f.items or "string", item, [*loc, i])
            if not error and f.item_enum and item not in f.item_enum:
                error = _err([*loc, i], "literal_error", f"Input should be {_expected(f.item_enum)}", item,
                             expected=_expected(f.item_enum))
            errors += [error] if error else []
            items.append(item)
        return items, errors
    value, error = _check_scalar(f.type, value, loc)
    if error:
        return value, [error]
    if f.enum is not None and value not in f.enum:
        return value, [_err(loc, "literal_error", f"Input should be {_expected(f.enum)}", value,
                            expected=_expected(f.enum))]
    if f.ge is not None and value < f.ge:
        return value, [_err(loc, "greater_than_equal", f"Input should be greater than or equal to {f.ge}",
                            value, ge=f.ge)]
    if f.le is not None and value > f.le:
        return value, [_err(loc, "less_than_equal", f"Input should be less than or equal to {f.le}",
                            value, le=f.le)]
    return value, []


def validate(endpoint: Endpoint, body: dict) -> tuple[dict, list[dict]]:
    """Check `body` against the endpoint's inputs; returns (arguments with defaults, errors)."""
    args: dict[str, Any] = {}
    errors: list[dict] = []
    for f in endpoint.fields:
        value = body.get(f.name)
        if value is None and not (f.required and f.name in body):
            if f.required:
                errors.append(_err([f.name], "missing", "Field required", body))
            elif f.has_default:
                args[f.name] = copy.deepcopy(f.default)
            continue
        value, field_errors = _check(f, value)
        errors += field_errors
        args[f.name] = value
    known = {f.name for f in endpoint.fields}
    errors += [_err([name], "extra_forbidden", "Extra inputs are not permitted", value)
               for name, value in body.items() if name not in known]
    return args, errors


# --- JSON Schema / OpenAPI ------------------------------------------------------------

_IMAGE_SIZE_SCHEMA = {
    "title": "ImageSize",
    "type": "object",
    "properties": {
        dim: {"title": dim.title(), "type": "integer", "minimum": IMAGE_SIZE_MIN, "maximum": IMAGE_SIZE_MAX,
              "description": f"The {dim} of the generated image."}
        for dim in ("width", "height")
    },
    "required": ["width", "height"],
    "additionalProperties": False,
}
_FILE_PROPS = {
    "url": {"type": "string", "description": "URL where the file can be downloaded from."},
    "content_type": {"type": "string", "description": "The mime type of the file."},
    "file_name": {"type": "string", "description": "The name of the file."},
    "file_size": {"type": "integer", "description": "The size of the file in bytes."},
}
_COMPONENTS = {
    "ImageSize": _IMAGE_SIZE_SCHEMA,
    "File": {"title": "File", "type": "object", "properties": _FILE_PROPS, "required": ["url"]},
    "Image": {
        "title": "Image",
        "type": "object",
        "properties": {**_FILE_PROPS, "width": {"type": "integer"}, "height": {"type": "integer"}},
        "required": ["url"],
    },
    "QueueStatus": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]},
            "request_id": {"type": "string"},
            "response_url": {"type": "string"},
            "status_url": {"type": "string"},
            "cancel_url": {"type": "string"},
            "queue_position": {"type": "integer"},
            "logs": {"type": "array", "items": {"type": "object"}},
            "metrics": {"type": "object"},
        },
        "required": ["status", "request_id"],
    },
}
_REF = "#/components/schemas/"
OUTPUT_SCHEMAS: dict[str, dict] = {
    "images": {"type": "array", "items": {"$ref": _REF + "Image"}, "description": "The generated images."},
    "image": {"$ref": _REF + "Image"},
    "mask_image": {"$ref": _REF + "Image"},
    "video": {"$ref": _REF + "File"},
    "audio": {"$ref": _REF + "File"},
    "audio_file": {"$ref": _REF + "File"},
    "seed": {"type": "integer", "description": "Seed used for generation."},
    "prompt": {"type": "string", "description": "The prompt used."},
    "num_images": {"type": "integer"},
    "has_nsfw_concepts": {"type": "array", "items": {"type": "boolean"}},
    "timings": {"type": "object", "additionalProperties": {"type": "number"}},
    "text": {"type": "string", "description": "The transcription."},
    "chunks": {
        "type": "array",
        "items": {"type": "object", "properties": {
            "timestamp": {"type": "array", "items": {"type": "number"}}, "text": {"type": "string"}}},
    },
    "inferred_languages": {"type": "array", "items": {"type": "string"}},
    "languages": {"type": "array", "items": {"type": "string"}},
    "diarization_segments": {"type": "array", "items": {"type": "object"}},
    "lyrics": {"type": "string"},
    "tags": {"type": "string"},
}
OPTIONAL_OUTPUTS = {"mask_image", "chunks"}


def field_schema(f: Field) -> dict:
    if f.type == "image_size":
        schema: dict[str, Any] = {"anyOf": [{"$ref": _REF + "ImageSize"},
                                            {"type": "string", "enum": list(IMAGE_SIZES)}]}
    elif f.type == "array":
        items: dict[str, Any] = {"type": f.items or "string"}
        if f.item_enum:
            items["enum"] = list(f.item_enum)
        schema = {"type": "array", "items": items}
        if f.min_items:
            schema["minItems"] = f.min_items
    else:
        schema = {"type": f.type}
        if f.enum is not None:
            schema["enum"] = list(f.enum)
        if f.ge is not None:
            schema["minimum"] = f.ge
        if f.le is not None:
            schema["maximum"] = f.le
    schema["title"] = f.name.replace("_", " ").title()
    if f.doc:
        schema["description"] = f.doc
    if f.has_default:
        schema["default"] = f.default
    return schema


def _schema_name(endpoint: Endpoint) -> str:
    return "".join(part.title() for part in endpoint.id.replace("-", "/").replace(".", "/").split("/"))


def input_schema(endpoint: Endpoint) -> dict:
    return {
        "title": _schema_name(endpoint) + "Input",
        "type": "object",
        "properties": {f.name: field_schema(f) for f in endpoint.fields},
        "required": [f.name for f in endpoint.fields if f.required],
        "x-fal-order-properties": [f.name for f in endpoint.fields],
        "additionalProperties": False,  # the sandbox rejects unknown fields
    }


def output_schema(endpoint: Endpoint) -> dict:
    return {
        "title": _schema_name(endpoint) + "Output",
        "type": "object",
        "properties": {name: OUTPUT_SCHEMAS[name] for name in endpoint.outputs},
        "required": [name for name in endpoint.outputs if name not in OPTIONAL_OUTPUTS],
    }


def openapi_document(endpoint: Endpoint, queue_url: str = "https://queue.fal.run") -> dict:
    """Shaped like fal's per-model queue OpenAPI document (schemas referenced from components)."""
    name = _schema_name(endpoint)
    base = f"/{endpoint.id}"
    request_path = f"/{endpoint.app}/requests/{{request_id}}"
    rid_param = [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    queue_status = {"200": {"description": "The request status.", "content": {
        "application/json": {"schema": {"$ref": _REF + "QueueStatus"}}}}}
    return {
        "openapi": "3.0.4",
        "info": {
            "title": f"Queue OpenAPI for {endpoint.id}",
            "version": "1.0.0",
            "description": endpoint.description,
            "x-fal-metadata": {"endpointId": endpoint.id, "category": endpoint.category},
        },
        "components": {
            "securitySchemes": {"apiKeyAuth": {"type": "apiKey", "in": "header", "name": "Authorization",
                                               "description": "Fal Key"}},
            "schemas": {**_COMPONENTS, name + "Input": input_schema(endpoint),
                        name + "Output": output_schema(endpoint)},
        },
        "paths": {
            f"{request_path}/status": {"get": {"parameters": [*rid_param, {
                "name": "logs", "in": "query", "schema": {"type": "number"}}], "responses": queue_status}},
            f"{request_path}/cancel": {"put": {"parameters": rid_param, "responses": {"200": {
                "description": "The request was cancelled."}}}},
            base: {"post": {
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": _REF + name + "Input"}}}},
                "responses": queue_status,
            }},
            request_path: {"get": {"parameters": rid_param, "responses": {"200": {
                "description": "Result of the request.", "content": {"application/json": {
                    "schema": {"$ref": _REF + name + "Output"}}}}}}},
        },
        "servers": [{"url": queue_url}],
        "security": [{"apiKeyAuth": []}],
    }


# --- platform listing -----------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """One row of the platform catalogue: runnable endpoints plus the listing-only extras."""

    endpoint_id: str
    display_name: str
    category: str
    description: str
    price: float
    unit: str
    per_call: float
    tags: tuple[str, ...]
    highlighted: bool
    status: str
    endpoint: Endpoint | None


@lru_cache(maxsize=1)
def catalogue() -> tuple[ModelInfo, ...]:
    rows = [
        ModelInfo(e.id, e.name, e.category, e.description, e.price, e.unit, e.per_call, e.tags,
                  e.highlighted, "active", e)
        for e in ENDPOINTS_LIST
    ]
    for eid, name, category, price, unit, tags in EXTRA_MODELS:
        status = "deprecated" if "deprecated" in tags else "active"
        per_call = 5 if unit == "second" else 1
        rows.append(ModelInfo(eid, name, category, f"{name} ({category}).", price, unit, per_call, tags,
                              False, status, None))
    return tuple(rows)


def find_model(endpoint_id: str) -> ModelInfo | None:
    return next((m for m in catalogue() if m.endpoint_id == endpoint_id), None)

