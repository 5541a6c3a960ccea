"""Placeholder media: PIL images, WAV audio and H.264 MP4 video (through PyAV), all real files that
browsers play.

Everything is deterministic from (prompt, seed) so tests can compare outputs. Only
imported by the running sandbox (PIL is heavy).
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import sys
import wave
from array import array

from PIL import Image, ImageDraw, ImageFont

MAX_PIXELS = 4096 * 4096  # larger requests are scaled down, keeping the aspect ratio
SAMPLE_RATE = 16000  # audio: 16 kHz mono 16-bit keeps files small
VIDEO_MAX_SIDE = 256
VIDEO_MAX_FRAMES = 600

FORMATS = {  # output_format -> (PIL format, mime type, extension)
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
    "jpg": ("JPEG", "image/jpeg", "jpg"),
    "png": ("PNG", "image/png", "png"),
    "webp": ("WEBP", "image/webp", "webp"),
    "gif": ("GIF", "image/gif", "gif"),
}


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).digest()


def cap_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def draw_image(
    width: int, height: int, prompt: str, seed: int, index: int = 0, base: Image.Image | None = None
) -> Image.Image:
    """A gradient with a few shapes, colours from hash(prompt, seed), prompt text in a corner."""
    d = _digest(prompt, seed, index)
    corners = Image.new("RGB", (2, 2))
    corners.putdata([tuple(d[i : i + 3]) for i in (0, 3, 6, 9)])
    img = corners.resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    for k in range(3):
        b = d[12 + 6 * k : 18 + 6 * k]
        cx, cy = b[0] / 255 * width, b[1] / 255 * height
        r = (0.08 + b[2] / 255 * 0.2) * min(width, height)
        box = (cx - r, cy - r, cx + r, cy + r)
        colour = (b[3], b[4], b[5])
        (draw.ellipse if k % 2 == 0 else draw.rectangle)(box, fill=colour, outline=(255, 255, 255))
    if base is not None:  # image-to-image: keep the input recognisable under the pattern
        img = Image.blend(base.convert("RGB").resize((width, height)), img, 0.35)
    label(img, prompt)
    return img


def label(img: Image.Image, text: str) -> None:
    """Draws `text` small in the bottom-left corner."""
    text = " ".join(text.split())[:80] or "fal sandbox"
    size = max(8, min(img.width, img.height) // 40)
    draw = ImageDraw.Draw(img)
    font = _font(size)
    x, y = size // 2, img.height - size * 2
    left, top, right, bottom = draw.textbbox((x, y), text, font=font)
    fill = (0, 0, 0, 160) if img.mode == "RGBA" else (0, 0, 0)
    draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=fill)
    draw.text((x, y), text, fill=(255, 255, 255), font=font)


def encode_image(img: Image.Image, fmt: str) -> tuple[bytes, str, str]:
    """Returns (bytes, mime type, extension)."""
    pil_format, mime, ext = FORMATS[fmt]
    if pil_format == "JPEG" and img.mode != "RGB":
        img = img.convert("RGB")
    buf = io.BytesIO()
    options = {"JPEG": {"quality": 85}, "PNG": {"compress_level": 1}, "WEBP": {"quality": 80}}
    img.save(buf, pil_format, **options.get(pil_format, {}))
    return buf.getvalue(), mime, ext


def cutout(img: Image.Image) -> tuple[Image.Image, Image.Image]:
    """Background removal stand-in: keeps a centred ellipse. Returns (RGBA image, L mask)."""
    mask = Image.new("L", img.size, 0)
    w, h = img.size
    ImageDraw.Draw(mask).ellipse((w * 0.15, h * 0.1, w * 0.85, h * 0.9), fill=255)
    rgba = img.convert("RGBA")
    rgba.putalpha(mask)
    return rgba, mask


def decode_image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# --- audio -----------------------------------------------------------------------------


def wav(seconds: float, prompt: str, seed: int, rate: int = SAMPLE_RATE) -> bytes:
    """A melody of quarter-second sine notes from a pentatonic scale, each struck and fading like a
    plucked string at its own loudness (so the waveform shows the notes), all chosen by
    hash(prompt, seed)."""
    total = max(1, round(seconds * rate))
    note_len = rate // 4
    scale = [220 * 2 ** (k / 12) for k in (0, 2, 4, 7, 9, 12, 14, 16)]
    notes: dict[tuple[float, int], bytes] = {}  # each (pitch, loudness) rendered once, then concatenated

    def note(freq: float, loudness: int) -> bytes:
        if (freq, loudness) not in notes:
            fade = rate // 100  # 10 ms ramps avoid clicks between notes
            samples = array(
                "h",
                (
                    int(
                        loudness
                        * math.exp(-3 * i / note_len)
                        * math.sin(2 * math.pi * freq * i / rate)
                        * min(1, i / fade, (note_len - i) / fade)
                    )
                    for i in range(note_len)
                ),
            )
            if sys.byteorder == "big":
                samples.byteswap()  # WAV is little-endian
            notes[freq, loudness] = samples.tobytes()
        return notes[freq, loudness]

    d = _digest(prompt, seed)
    chunks, have, i = [], 0, 0
    while have < total:
        chunks.append(note(scale[d[i % len(d)] % len(scale)], 5000 + 2000 * (d[(i + 7) % len(d)] % 6)))
        have += note_len
        i += 1
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(chunks)[: total * 2])
    return buf.getvalue()


def wav_seconds(data: bytes) -> float | None:
    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError):
        return None


# --- video -----------------------------------------------------------------------------


def video_size(aspect: float) -> tuple[int, int]:
    """Small frames: VIDEO_MAX_SIDE on the long side, even dimensions."""
    if aspect >= 1:
        w, h = VIDEO_MAX_SIDE, VIDEO_MAX_SIDE / aspect
    else:
        w, h = VIDEO_MAX_SIDE * aspect, VIDEO_MAX_SIDE
    return max(16, int(w) // 2 * 2), max(16, int(h) // 2 * 2)


def video_frames(
    width: int, height: int, count: int, prompt: str, seed: int, base: Image.Image | None = None
) -> list[Image.Image]:
    """The still image with a ball travelling across it, frame by frame."""
    background = draw_image(width, height, prompt, seed, base=base).convert("RGB")
    d = _digest(prompt, seed, "ball")
    colour = (d[0], d[1], d[2])
    r = max(4, min(width, height) // 8)
    frames = []
    for i in range(count):
        t = i / max(1, count - 1)
        frame = background.copy()
        x = r + t * (width - 2 * r)
        y = height / 2 + math.sin(t * 2 * math.pi) * (height / 2 - r)
        ImageDraw.Draw(frame).ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=(255, 255, 255))
        frames.append(frame)
    return frames


def mp4(frames: list[Image.Image], width: int, height: int, fps: float) -> bytes:
    """An MP4 holding one H.264 track (yuv420p, as fal's videos and every browser play), the index
    first so a player can start before the end."""
    import os
    import tempfile
    from fractions import Fraction

    import av

    # A file, not memory: putting the index first (faststart) rewrites the file once it is written.
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "video.mp4")
        with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "ultrafast"}
            for image in frames:
                frame = av.VideoFrame.from_image(image.convert("RGB").resize((width, height)))
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))  # flush the encoder
        with open(path, "rb") as file:
            return file.read()


def mp4_seconds(data: bytes) -> float | None:
    """Duration from the mvhd box of an MP4, or None if it is not one."""
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size < 8:
            return None
        if kind == b"moov":
            inner = data[pos + 8 : pos + size]
            if inner[4:8] == b"mvhd":
                version = inner[8]
                fmt, at = (">IQ", 20 + 8) if version == 1 else (">II", 20)
                timescale, duration = struct.unpack(fmt, inner[at : at + struct.calcsize(fmt)])
                return duration / timescale if timescale else None
            return None
        pos += size
    return None
