"""Output builders: turn validated arguments into a fal-shaped result with stored media.

Runs in a worker thread (PIL work must not block the event loop). Each builder
returns (fields, usage) where usage counts what was produced per billing unit.
"""

from __future__ import annotations

import base64
import random
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import media
from .catalog import IMAGE_SIZES, Endpoint


class InputError(Exception):
    """An input the model cannot use (e.g. an image URL that cannot be downloaded): 422."""

    def __init__(self, errors: list[dict]):
        super().__init__(errors[0]["msg"])
        self.errors = errors


@dataclass
class Context:
    """What a builder may touch: fetching inputs and storing outputs."""

    read_local: Callable[[str], bytes | None]  # sandbox CDN URL -> bytes (None if not ours/missing)
    store: Callable[[bytes, str, str], str]  # (data, content type, file name) -> URL
    sync_mode: bool = False

    def fetch(self, loc: list, url: str, kind: str = "file") -> bytes:
        data = None
        if url.startswith("data:"):
            data = _decode_data_uri(url)
        elif url.startswith(("http://", "https://")):
            data = self.read_local(url)
        if data is None:
            short = url if len(url) <= 100 else url[:97] + "..."
            raise InputError([{
                "loc": ["body", *loc], "msg": f"Could not download {kind} from {short}",
                "type": "file_download_error", "input": short,
            }])
        return data

    def fetch_image(self, loc: list, url: str):
        data = self.fetch(loc, url, "image")
        try:
            return media.decode_image(data)
        except Exception:  # PIL raises many types for bad data
            raise InputError([{
                "loc": ["body", *loc], "msg": "Could not load the image: unsupported or corrupt image data",
                "type": "image_load_error", "input": url[:100],
            }]) from None

    def file(self, data: bytes, content_type: str, file_name: str) -> dict:
        if self.sync_mode:
            url = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
        else:
            url = self.store(data, content_type, file_name)
        return {"url": url, "content_type": content_type, "file_name": file_name, "file_size": len(data)}

    def image(self, img, fmt: str, name: str) -> dict:
        data, mime, ext = media.encode_image(img, fmt)
        return {**self.file(data, mime, f"{name}.{ext}"), "width": img.width, "height": img.height}


def _decode_data_uri(uri: str) -> bytes | None:
    header, sep, payload = uri.partition(",")
    if not sep:
        return None
    try:
        if header.endswith(";base64"):
            return base64.b64decode(payload, validate=False)
        return urllib.parse.unquote_to_bytes(payload)
    except ValueError:
        return None


def run(endpoint: Endpoint, args: dict, ctx: Context) -> tuple[dict, float]:
    """Returns (result JSON, billable quantity in the endpoint's unit)."""
    ctx.sync_mode = bool(args.get("sync_mode"))
    started = time.perf_counter()
    out, usage = BUILDERS[endpoint.build](endpoint, args, ctx)
    out.setdefault("timings", {"inference": round(time.perf_counter() - started, 4)})
    result = {name: out[name] for name in endpoint.outputs if name in out}
    quantity = usage.get(endpoint.unit, 1)  # "request" / "video": one per call
    return result, round(quantity, 6)


# --- helpers ---------------------------------------------------------------------------


def _seed(args: dict) -> int:
    return args["seed"] if args.get("seed") is not None else random.randint(0, 2**31 - 1)


def _aspect_size(ratio: str, area: int = 1024 * 1024) -> tuple[int, int]:
    """'16:9' -> about one megapixel at that ratio, multiples of 32."""
    w, h = (int(x) for x in ratio.split(":"))
    width = (area * w / h) ** 0.5
    return round(width / 32) * 32, round(area / width / 32) * 32


def _requested_size(args: dict, key: str = "image_size") -> tuple[int, int] | None:
    size = args.get(key)
    if isinstance(size, str):
        return IMAGE_SIZES[size]
    if isinstance(size, dict):
        return size["width"], size["height"]
    if args.get("aspect_ratio") not in (None, "auto"):
        return _aspect_size(args["aspect_ratio"])
    return None


def _format(args: dict, default: str = "jpeg") -> str:
    return args.get("output_format") or args.get("format") or default


def _image_usage(images: list[dict]) -> dict:
    return {"image": len(images), "megapixel": sum(i["width"] * i["height"] for i in images) / 1e6}


def _images_result(args: dict, seed: int, images: list[dict]) -> dict:
    return {
        "images": images, "seed": seed, "prompt": args.get("prompt", ""),
        "has_nsfw_concepts": [False] * len(images), "num_images": len(images),
    }


# --- builders ----------------------------------------------------------------------------


def text_to_image(endpoint: Endpoint, args: dict, ctx: Context):
    seed = _seed(args)
    default = IMAGE_SIZES[endpoint.opts.get("size", "square_hd")]
    width, height = media.cap_size(*(_requested_size(args) or default))
    if args.get("image_url"):  # flux ultra's optional image prompt
        ctx.fetch_image(["image_url"], args["image_url"])
    fmt = _format(args)
    images = [ctx.image(media.draw_image(width, height, args["prompt"], seed, i), fmt, f"image_{i}")
              for i in range(args.get("num_images", 1))]
    return _images_result(args, seed, images), _image_usage(images)


def image_to_image(endpoint: Endpoint, args: dict, ctx: Context):
    seed = _seed(args)
    if "image_urls" in args:
        bases = [ctx.fetch_image(["image_urls", i], url) for i, url in enumerate(args["image_urls"])]
        base = bases[0]
    else:
        base = ctx.fetch_image(["image_url"], args["image_url"])
    for key in ("mask_url", "reference_image_url"):
        if args.get(key):
            ctx.fetch_image([key], args[key])
    width, height = media.cap_size(*(_requested_size(args) or base.size))
    fmt = _format(args)
    images = [
        ctx.image(media.draw_image(width, height, args["prompt"], seed, i, base=base), fmt, f"image_{i}")
        for i in range(args.get("num_images", 1))
    ]
    return _images_result(args, seed, images), _image_usage(images)


def remove_background(endpoint: Endpoint, args: dict, ctx: Context):
    base = ctx.fetch_image(["image_url"], args["image_url"])
    base = base.resize(media.cap_size(*base.size)).convert("RGB")
    cut, mask = media.cutout(base)
    fmt = args["output_format"]
    out = {"image": ctx.image(mask if args.get("mask_only") else cut, fmt, "image")}
    if args.get("output_mask"):
        out["mask_image"] = ctx.image(mask, "png", "mask")
    return out, {"image": 1, "megapixel": base.width * base.height / 1e6}


def upscale(endpoint: Endpoint, args: dict, ctx: Context):
    seed = _seed(args)
    base = ctx.fetch_image(["image_url"], args["image_url"]).convert("RGB")
    factor = args["upscale_factor"]
    size = media.cap_size(round(base.width * factor), round(base.height * factor))
    img = base.resize(size, media.Image.Resampling.BICUBIC)
    image = ctx.image(img, "png", "upscaled")
    return {"image": image, "seed": seed}, {"image": 1, "megapixel": img.width * img.height / 1e6}


def outpaint(endpoint: Endpoint, args: dict, ctx: Context):
    seed = _seed(args)
    base = ctx.fetch_image(["image_url"], args["image_url"]).convert("RGB")
    left, right = args.get("expand_left", 0), args.get("expand_right", 0)
    top, bottom = args.get("expand_top", 0), args.get("expand_bottom", 0)
    images = []
    for i in range(args.get("num_images", 1)):
        if left or right or top or bottom:
            canvas = media.draw_image(base.width + left + right, base.height + top + bottom,
                                      args.get("prompt", ""), seed, i)
            canvas.paste(base, (left, top))
        else:  # zoom out: the input shrinks inside a canvas of the same size
            keep = 1 - args.get("zoom_out_percentage", 20) / 100
            canvas = media.draw_image(base.width, base.height, args.get("prompt", ""), seed, i)
            inner = base.resize((max(1, round(base.width * keep)), max(1, round(base.height * keep))))
            canvas.paste(inner, ((base.width - inner.width) // 2, (base.height - inner.height) // 2))
        w, h = media.cap_size(*canvas.size)
        images.append(ctx.image(canvas.resize((w, h)) if (w, h) != canvas.size else canvas,
                                _format(args, "png"), f"image_{i}"))
    return {"images": images, "seed": seed}, _image_usage(images)


def video(endpoint: Endpoint, args: dict, ctx: Context):
    seed = _seed(args)
    frames, fps = endpoint.opts["timing"](args)
    base = ctx.fetch_image(["image_url"], args["image_url"]) if args.get("image_url") else None
    if args.get("tail_image_url"):
        ctx.fetch_image(["tail_image_url"], args["tail_image_url"])
    if args.get("video_url"):
        source = ctx.fetch(["video_url"], args["video_url"], "video")
        if frames is None:  # same length as the input video
            frames = round((media.mp4_seconds(source) or 5) * fps)
    aspect = 16 / 9
    if args.get("aspect_ratio") not in (None, "auto"):
        w, h = (int(x) for x in args["aspect_ratio"].split(":"))
        aspect = w / h
    elif _requested_size(args, "video_size"):
        w, h = _requested_size(args, "video_size")
        aspect = w / h
    elif base is not None:
        aspect = base.width / base.height
    width, height = media.video_size(aspect)
    frames = max(1, min(int(frames), media.VIDEO_MAX_FRAMES))
    prompt = args.get("prompt") or endpoint.name
    data = media.mp4(media.video_frames(width, height, frames, prompt, seed, base), width, height, fps)
    return {"video": ctx.file(data, "video/mp4", "video.mp4"), "seed": seed}, {"second": frames / fps}


def audio(endpoint: Endpoint, args: dict, ctx: Context):
    seed = _seed(args)
    if args.get("reference_audio_url"):
        ctx.fetch(["reference_audio_url"], args["reference_audio_url"], "audio")
    seconds = float(endpoint.opts["seconds"](args))
    text = args.get("prompt") or args.get("tags", "")
    file = ctx.file(media.wav(seconds, text, seed), "audio/wav", "audio.wav")
    out = {"audio": file, "audio_file": file, "seed": seed, "tags": args.get("tags", ""),
           "lyrics": args.get("lyrics", "")}
    return out, {"second": seconds}


def speech(endpoint: Endpoint, args: dict, ctx: Context):
    # About 2.5 words a second at speed 1, at least one second.
    seconds = min(600.0, max(1.0, len(args["prompt"].split()) / 2.5 / args["speed"]))
    file = ctx.file(media.wav(seconds, args["prompt"], args["voice"]), "audio/wav", "speech.wav")
    return {"audio": file}, {"second": seconds}


def transcribe(endpoint: Endpoint, args: dict, ctx: Context):
    data = ctx.fetch(["audio_url"], args["audio_url"], "audio")
    seconds = media.wav_seconds(data) or 10.0
    words = ["This", "is", "a", "sandbox", "transcription", "of", f"{seconds:.1f}", "seconds", "of", "audio."]
    half = round(seconds / 2, 2)
    chunks = [
        {"timestamp": [0.0, half], "text": " ".join(words[:5])},
        {"timestamp": [half, round(seconds, 2)], "text": " ".join(words[5:])},
    ]
    language = args.get("language") or "en"
    out = {"text": " ".join(words), "chunks": chunks, "inferred_languages": [language],
           "languages": [language], "diarization_segments": []}
    return out, {"second": seconds}


BUILDERS: dict[str, Callable[[Endpoint, dict, Context], tuple[dict, dict[str, Any]]]] = {
    "text_to_image": text_to_image,
    "image_to_image": image_to_image,
    "remove_background": remove_background,
    "upscale": upscale,
    "outpaint": outpaint,
    "video": video,
    "audio": audio,
    "speech": speech,
    "transcribe": transcribe,
}
