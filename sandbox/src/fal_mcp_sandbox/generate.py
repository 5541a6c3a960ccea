"""Output drawing: a fal-shaped result for a validated input, shaped by the endpoint's output schema.

Runs in a worker thread (PIL work must not block the event loop). Nothing here knows a model; it
reads the output schema and the input:

- an object with a `url` property is a file, drawn and stored on the sandbox CDN: an image (field
  name, title or description says image/mask/...), a video (an H.264 MP4) or audio (a WAV). Images
  have the requested size (`image_size` preset or object, `width`/`height`, `aspect_ratio`), else the
  input image's size times its upscale factor plus any `expand_*` pixels; a mask is a grey mask and
  an image "with background removed" a transparent cut-out. A list of images holds `num_images`.
- video length: `num_frames` at `fps`/`frames_per_second`, else `first_n_seconds` or `duration`
  seconds, else the input video's length; audio length: `duration`/`seconds_total`/..., speech from
  the words of the text, else the input audio's length, else 30 s.
- other fields get plausible values of their type: `seed` the seed used, `timings` the drawing
  time, a field named like an input field echoes it (prompt, tags, lyrics), `text` a transcription
  of the input audio with timed `chunks`, languages the input's language, lists of flags False.
- optional file fields are left out unless an input flag asks for them (`output_mask` for
  `mask_image`): fal returns those only when asked.

An endpoint whose pack vendors no output schema gets a minimal one for its kind (images, video,
audio or text). Inputs that are URLs (`*_url`, `*_urls`) are read from the sandbox's own CDN or data:
URIs; any other URL fails like fal's download would (422, file_download_error).
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
from .endpoints import Endpoint, file_kind

IMAGE_SIZES = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
# fal's text-to-image models default to landscape_4_3; the vendored schemas often lost that default.
DEFAULT_IMAGE_SIZE = "landscape_4_3"
SCALE_FIELDS = ("upscale_factor", "upscaling_factor", "scale")
AUDIO_SECONDS_FIELDS = ("duration", "seconds_total", "duration_seconds", "seconds")
DEFAULT_AUDIO_SECONDS = 30.0  # the usual clip of fal's music models (lyria2 always makes 30 s)
DEFAULT_VIDEO_SECONDS = 5.0
DEFAULT_FPS = 24.0
FPS_ONLY_FRAMES = 25  # a model told only a frame rate makes a fixed clip: Stable Video Diffusion's 25 frames
MAX_AUDIO_SECONDS = 600.0
MAX_IMAGES = 16
MAX_DEPTH = 12  # of nested output schemas

_FILE = {
    "url": {"type": "string"},
    "content_type": {"type": "string"},
    "file_name": {"type": "string"},
    "file_size": {"type": "integer"},
}
_IMAGE = {
    "type": "object",
    "required": ["url"],
    "properties": {**_FILE, "width": {"type": "integer"}, "height": {"type": "integer"}},
}
# Output schemas for endpoints whose pack vendors none: the commonest shape of each kind.
FALLBACK_OUTPUTS = {
    "image": {
        "type": "object",
        "properties": {"images": {"type": "array", "items": _IMAGE}, "seed": {"type": "integer"}},
        "required": ["images", "seed"],
    },
    "video": {
        "type": "object",
        "properties": {"video": {"type": "object", "properties": _FILE}, "seed": {"type": "integer"}},
        "required": ["video", "seed"],
    },
    "audio": {
        "type": "object",
        "properties": {"audio": {"type": "object", "properties": _FILE}},
        "required": ["audio"],
    },
    "text": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}


class InputError(Exception):
    """An input the model cannot use (e.g. an image URL that cannot be downloaded): 422."""

    def __init__(self, errors: list[dict]):
        super().__init__(errors[0]["msg"])
        self.errors = errors


@dataclass
class Context:
    """What the drawing may touch: fetching inputs and storing outputs."""

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
            raise InputError(
                [
                    {
                        "loc": ["body", *loc],
                        "msg": f"Could not download {kind} from {short}",
                        "type": "file_download_error",
                        "input": short,
                    }
                ]
            )
        return data

    def fetch_image(self, loc: list, url: str):
        data = self.fetch(loc, url, "image")
        try:
            return media.decode_image(data)
        except Exception:  # PIL raises many types for bad data
            raise InputError(
                [
                    {
                        "loc": ["body", *loc],
                        "msg": "Could not load the image: unsupported or corrupt image data",
                        "type": "image_load_error",
                        "input": url[:100],
                    }
                ]
            ) from None

    def file(self, data: bytes, content_type: str, file_name: str) -> dict:
        if self.sync_mode:
            url = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
        else:
            url = self.store(data, content_type, file_name)
        return {"url": url, "content_type": content_type, "file_name": file_name, "file_size": len(data)}

    def image(self, img, fmt: str, name: str) -> dict:
        data, mime, ext = media.encode_image(img, fmt if fmt in media.FORMATS else "png")
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


def _number(value: Any) -> float | None:
    """A positive number from a number or a numeric string ("5", "5s": kling's durations)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().rstrip("s"))
        except ValueError:
            return None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _aspect_size(ratio: str, area: int = 1024 * 1024) -> tuple[int, int] | None:
    """'16:9' -> about one megapixel at that ratio, multiples of 32."""
    try:
        w, h = (float(x) for x in ratio.split(":"))
    except ValueError:
        return None
    if w <= 0 or h <= 0:
        return None
    width = (area * w / h) ** 0.5
    return max(32, round(width / 32) * 32), max(32, round(area / width / 32) * 32)


def _size(value: Any) -> tuple[int, int] | None:
    """An image_size / video_size value: a preset name or {width, height}."""
    if isinstance(value, str):
        return IMAGE_SIZES.get(value)
    if isinstance(value, dict):
        width, height = _number(value.get("width", 512)), _number(value.get("height", 512))
        return (int(width), int(height)) if width and height else None
    return None


def run(endpoint: Endpoint, args: dict, ctx: Context) -> tuple[dict, float]:
    """Returns (result JSON, billable quantity in the endpoint's price unit)."""
    ctx.sync_mode = bool(args.get("sync_mode"))
    drawing = Drawing(endpoint, args, ctx)
    started = time.perf_counter()
    schema = endpoint.output_schema or FALLBACK_OUTPUTS.get(endpoint.kind, FALLBACK_OUTPUTS["text"])
    result = drawing.fill(schema, "", 0)
    if not isinstance(result, dict):
        result = {}
    if "timings" in result:
        result["timings"] = {"inference": round(time.perf_counter() - started, 4)}
    return result, round(drawing.usage(endpoint.unit), 6)


class Drawing:
    """One job's output: the input's media read once, then each output field filled from the schema."""

    def __init__(self, endpoint: Endpoint, args: dict, ctx: Context):
        self.endpoint, self.args, self.ctx = endpoint, args, ctx
        self.root: dict = {}
        seed = args.get("seed")
        self.seed = seed if _whole(seed) else random.randint(0, 2**31 - 1)
        texts = [args.get(k) for k in ("prompt", "tags", "text")]
        self.prompt = next((t for t in texts if isinstance(t, str) and t), endpoint.display_name)  # drawn in
        count = args.get("num_images")
        self.num_images = min(MAX_IMAGES, max(1, count)) if _whole(count) else 1
        self.images: list = []  # input images, in input order
        self.base = None  # the input image outputs are made from
        self.audio_in: float | None = None  # seconds of input audio
        self.video_in: float | None = None  # seconds of input video
        self.drawn: list[dict] = []  # output files with their kind, for usage
        self._picture_size: tuple[int, int] | None = None
        self._read_inputs()

    # --- inputs ----------------------------------------------------------------------------------

    def _read_inputs(self) -> None:
        bases = []
        for name, value in self.args.items():
            if not name.endswith(("_url", "_urls")):
                continue
            urls = (
                [(value, [name])]
                if isinstance(value, str)
                else (
                    [(url, [name, i]) for i, url in enumerate(value) if isinstance(url, str)]
                    if isinstance(value, list)
                    else []
                )
            )
            # Media is read like fal's workers would; other URLs (LoRA weights, ...) are left alone.
            kind = file_kind(name, {}, fallback="other")
            for url, loc in urls:
                if kind == "image":
                    image = self.ctx.fetch_image(loc, url)
                    self.images.append(image)
                    # The picture the output is made from: not a mask, reference or end frame.
                    if not any(word in name for word in ("mask", "reference", "tail", "end", "style")):
                        bases.append(image)
                elif kind == "video":
                    data = self.ctx.fetch(loc, url, "video")
                    self.video_in = media.mp4_seconds(data) or DEFAULT_VIDEO_SECONDS
                elif kind == "audio":
                    self.audio_in = media.wav_seconds(self.ctx.fetch(loc, url, "audio")) or 10.0
        self.base = bases[0] if bases else (self.images[0] if self.images else None)

    # --- the schema walk ---------------------------------------------------------------------------

    def _resolve(self, node: Any) -> dict:
        """A schema node with local $refs followed, single allOf merged and one anyOf/oneOf branch taken."""
        for _ in range(MAX_DEPTH):
            if not isinstance(node, dict):
                return {}
            if isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
                target: Any = self.root
                for part in node["$ref"][2:].split("/"):
                    target = target.get(part, {}) if isinstance(target, dict) else {}
                node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            elif len(node.get("allOf") or ()) == 1:
                node = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
            elif node.get("anyOf") or node.get("oneOf"):
                options = [self._resolve(option) for option in node.get("anyOf") or node.get("oneOf")]
                # The first real branch: `{}` (anything) and null say nothing about the value.
                chosen = next((o for o in options if o and o.get("type") != "null"), {})
                node = {**chosen, **{k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}}
            else:
                return node
        return {}

    def _is_file(self, schema: dict) -> bool:
        return "url" in (schema.get("properties") or {})

    def _holds_files(self, schema: dict) -> bool:
        schema = self._resolve(schema)
        return self._is_file(schema) or (
            schema.get("type") == "array" and self._is_file(self._resolve(schema.get("items")))
        )

    def _asked_for(self, name: str) -> bool:
        """An optional file field is drawn only when a flag asks for it: output_mask=true for mask_image."""
        return any(
            flag.startswith("output_") and value is True and flag[len("output_") :] in name
            for flag, value in self.args.items()
        )

    def fill(self, schema: Any, name: str, depth: int) -> Any:
        if depth == 0:
            self.root = schema if isinstance(schema, dict) else {}
        schema = self._resolve(schema)
        if depth > MAX_DEPTH:
            return None
        if self._is_file(schema):
            return self.file(name, schema, 0)
        kind = schema.get("type")
        if kind == "array" or "items" in schema:
            return self._array(schema, name, depth)
        if kind == "object" or "properties" in schema:
            return self._object(schema, name, depth)
        return self._scalar(schema, name)

    def _object(self, schema: dict, name: str, depth: int) -> dict:
        properties = schema.get("properties") or {}
        if name == "timings" or not properties:
            return {"inference": 0.0} if name == "timings" else {}
        required = set(schema.get("required") or ())
        out = {}
        for key, prop in properties.items():
            if key not in required and self._holds_files(prop) and not self._asked_for(key):
                continue
            value = self.fill(prop, key, depth + 1)
            if value is not None or key in required:
                out[key] = value
        return out

    def _array(self, schema: dict, name: str, depth: int) -> list:
        items = self._resolve(schema.get("items"))
        if self._is_file(items):
            kind = file_kind(name, items, self._fallback_kind())
            return [self.file(name, items, i) for i in range(self.num_images if kind == "image" else 1)]
        props = items.get("properties") or {}
        if "timestamp" in props or ("start" in props and "end" in props):
            return self._chunks(items)
        if items.get("type") == "boolean":  # has_nsfw_concepts and its kind: one flag per image
            return [False] * self.num_images
        if "language" in name and items.get("type") == "string":
            return [self._language()]
        return [self.fill(items, name, depth + 1) for _ in range(int(schema.get("minItems") or 0))]

    def _scalar(self, schema: dict, name: str) -> Any:
        kind = schema.get("type")
        if name == "seed" and kind in ("integer", "number", None):
            return self.seed
        echoed = self.args.get(name)
        if echoed is not None and (kind is None or _fits(kind, echoed)):
            return echoed
        if name in ("text", "transcription") and kind in ("string", None):
            return self._transcript()
        if "language" in name and kind == "string":
            return self._language()
        if "default" in schema:
            return schema["default"]
        if schema.get("enum"):
            return schema["enum"][0]
        if kind in ("integer", "number"):
            low = schema.get("minimum", 0)
            return int(low) if kind == "integer" else float(low)
        return {"string": "", "boolean": False, "null": None}.get(kind)

    # --- files -----------------------------------------------------------------------------------------

    def _fallback_kind(self) -> str:
        return self.endpoint.kind if self.endpoint.kind in ("image", "video", "audio") else "image"

    def file(self, name: str, schema: dict, index: int) -> dict:
        kind = file_kind(name, schema, self._fallback_kind())
        if kind == "video":
            out = self._video(name)
        elif kind == "audio":
            out = self._audio(name)
        else:
            out = self._image(name, schema, index)
        self.drawn.append(out)
        # Size and length fields a file schema names (width, height, duration, fps, num_frames).
        extra = {
            key: out[key]
            for key in ("width", "height", "duration", "fps", "num_frames")
            if key in out
            and (kind == "image" and key in ("width", "height") or key in (schema.get("properties") or {}))
        }
        return {key: out[key] for key in ("url", "content_type", "file_name", "file_size")} | extra

    def picture_size(self) -> tuple[int, int]:
        """The size of the images drawn: the one asked for, else the input image's, else a default."""
        if self._picture_size is None:
            args = self.args
            size = _size(args.get("image_size"))
            if size is None and _whole(args.get("width")) and _whole(args.get("height")):
                size = (args["width"], args["height"])
            ratio = args.get("aspect_ratio")
            if size is None and isinstance(ratio, str) and ratio != "auto":
                size = _aspect_size(ratio)
            if size is None and self.base is not None:
                factor = next(filter(None, (_number(args.get(name)) for name in SCALE_FIELDS)), 1.0)
                grow = {
                    side: int(_number(args.get(f"expand_{side}")) or 0)
                    for side in ("left", "right", "top", "bottom")
                }
                size = (
                    round(self.base.width * factor) + grow["left"] + grow["right"],
                    round(self.base.height * factor) + grow["top"] + grow["bottom"],
                )
            if size is None:
                # A model that takes an image_size uses fal's usual default; one that takes none, a square.
                schema = self.endpoint.input_schema
                takes_size = schema is None or "image_size" in (schema.get("properties") or {})
                size = IMAGE_SIZES[DEFAULT_IMAGE_SIZE if takes_size else "square_hd"]
            self._picture_size = media.cap_size(*size)
        return self._picture_size

    def _image(self, name: str, schema: dict, index: int) -> dict:
        words = f"{name} {schema.get('title', '')} {schema.get('description', '')}".lower()
        width, height = self.picture_size()
        fmt = self.args.get("output_format") or self.args.get("format")
        source = self.base.convert("RGB").resize((width, height)) if self.base is not None else None
        if "mask" in name.lower():
            image = media.cutout(source or media.draw_image(width, height, self.prompt, self.seed, index))[1]
            fmt = "png"
        elif "background" in words and "remov" in words:  # background removal: a transparent cut-out
            cut, mask = media.cutout(source or media.draw_image(width, height, self.prompt, self.seed, index))
            image = mask if self.args.get("mask_only") else cut
            fmt = fmt or "png"
        else:
            image = media.draw_image(width, height, self.prompt, self.seed, index, base=self.base)
            default_type = str((schema.get("properties") or {}).get("content_type", {}).get("default", ""))
            fmt = fmt or (
                default_type.removeprefix("image/")
                if default_type.startswith("image/")
                else ("png" if self.base is not None else "jpeg")
            )
        return {**self.ctx.image(image, str(fmt).lower(), f"{name or 'image'}_{index}"), "kind": "image"}

    def video_timing(self) -> tuple[int, float]:
        """(frames, fps) the input asks for."""
        args = self.args
        rate = _number(args.get("fps")) or _number(args.get("frames_per_second"))
        fps = rate or DEFAULT_FPS
        frames = _number(args.get("num_frames"))
        if frames:
            return int(frames), fps
        seconds = _number(args.get("first_n_seconds")) or _number(args.get("duration")) or self.video_in
        if seconds:
            return round(seconds * fps), fps
        return (FPS_ONLY_FRAMES if rate else round(DEFAULT_VIDEO_SECONDS * fps)), fps

    def _video(self, name: str) -> dict:
        frames, fps = self.video_timing()
        frames = max(1, min(frames, media.VIDEO_MAX_FRAMES))
        aspect = 16 / 9
        ratio = self.args.get("aspect_ratio")
        requested = _aspect_size(ratio) if isinstance(ratio, str) and ratio != "auto" else None
        requested = requested or _size(self.args.get("video_size")) or _size(self.args.get("image_size"))
        if requested:
            aspect = requested[0] / requested[1]
        elif self.base is not None:
            aspect = self.base.width / self.base.height
        width, height = media.video_size(aspect)
        data = media.mp4(
            media.video_frames(width, height, frames, self.prompt, self.seed, self.base), width, height, fps
        )
        out = self.ctx.file(data, "video/mp4", f"{name or 'video'}.mp4")
        return {
            **out,
            "kind": "video",
            "seconds": frames / fps,
            "width": width,
            "height": height,
            "duration": round(frames / fps, 3),
            "fps": fps,
            "num_frames": frames,
        }

    def audio_seconds(self) -> float:
        args = self.args
        seconds = next((_number(args.get(k)) for k in AUDIO_SECONDS_FIELDS if _number(args.get(k))), None)
        if seconds is None and isinstance(args.get("voice"), str):  # speech: about 2.5 words a second
            words = len(str(args.get("prompt") or args.get("text") or "").split())
            seconds = max(1.0, words / 2.5 / (_number(args.get("speed")) or 1.0))
        seconds = seconds or self.audio_in or DEFAULT_AUDIO_SECONDS
        return min(MAX_AUDIO_SECONDS, seconds)

    def _audio(self, name: str) -> dict:
        seconds = self.audio_seconds()
        out = self.ctx.file(media.wav(seconds, self.prompt, self.seed), "audio/wav", f"{name or 'audio'}.wav")
        return {**out, "kind": "audio", "seconds": seconds, "duration": seconds}

    # --- text ------------------------------------------------------------------------------------------

    def _language(self) -> str:
        language = self.args.get("language")
        return language if isinstance(language, str) and language else "en"

    def _words(self) -> list[str]:
        seconds = self.audio_in or 10.0
        return f"This is a sandbox transcription of {seconds:.1f} seconds of audio.".split()

    def _transcript(self) -> str:
        if self.audio_in is None:  # a text answer to a text input, not a transcription
            return f"This is a sandbox answer to: {self.prompt}"
        return " ".join(self._words())

    def _chunks(self, items: dict) -> list[dict]:
        seconds = round(self.audio_in or 10.0, 2)
        half, words = round(seconds / 2, 2), self._words()
        spans = [(0.0, half, " ".join(words[:5])), (half, seconds, " ".join(words[5:]))]
        required = set(items.get("required") or ())
        out = []
        for start, end, text in spans:
            known = {"timestamp": [start, end], "start": start, "end": end, "text": text}
            out.append(
                {
                    key: known[key] if key in known else self._scalar(self._resolve(prop), key)
                    for key, prop in (items.get("properties") or {}).items()
                    if key in known or key in required
                }
            )
        return out

    # --- billing ---------------------------------------------------------------------------------------

    def usage(self, unit: str) -> float:
        """How many of the endpoint's price units this output counts."""
        unit = unit.strip().lower()
        images = [f for f in self.drawn if f["kind"] == "image"]
        seconds = sum(f.get("seconds", 0) for f in self.drawn) or (self.audio_in or 0)
        if "megapixel" in unit:
            return sum(f["width"] * f["height"] for f in images) / 1e6
        if "image" in unit:
            return len(images)
        if "second" in unit:
            return seconds
        if "minute" in unit:
            return seconds / 60
        if "character" in unit:
            characters = len(str(self.args.get("prompt") or self.args.get("text") or ""))
            return characters / 1000 if "1000" in unit else characters
        return 1.0  # per request, per video, ...


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fits(kind: str | list, value: Any) -> bool:
    kinds = [kind] if isinstance(kind, str) else list(kind)
    checks = {
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
        "null": lambda v: v is None,
    }
    return any(checks.get(k, lambda v: False)(value) for k in kinds)
