"""Helpers the video translators and tools share: turning a duration into what each model
reads, and the result text. Each translator builds its input with the core's EndpointInput:
a parameter a model cannot take is dropped with a note, never sent to be silently ignored;
one the user cannot do without (a last frame) is refused.
"""

from __future__ import annotations

from typing import Literal

from fal_mcp import EndpointCall, EndpointInput, FalResult, Model, ToolResult, find_files, generation_output

AspectRatio = Literal["16:9", "9:16", "1:1"]
PACKAGE = __name__.split(".")[0]  # where the endpoints' schemas are vendored


# -- duration: what each model reads ------------------------------------------------------


def choice_duration(req: EndpointInput, name: str = "duration") -> None:
    """Models with a fixed menu of lengths, sent as strings (Kling: "5" or "10")."""
    lengths = sorted(int(choice) for choice in req.choices(name))
    asked = req.get("duration")
    seconds = min(lengths, key=lambda length: (abs(length - asked), length))  # a tie: the shorter, cheaper
    req.send(**{name: str(seconds)})
    req.made(seconds, " or ".join(f"{length} s" for length in lengths))


def frames_and_fps(
    req: EndpointInput,
    *,
    usual_fps: int,
    frames_field: str | None = "num_frames",
    fps_field: str = "fps",
    fixed_frames: int | None = None,
) -> None:
    """Models whose length is frames / fps: the pair nearest the asked duration, and among
    equally near ones the frame rate nearest the model's usual one (then the smoother). The
    ranges are the endpoint's. `frames_field` None: the frame count is `fixed_frames` (SVD's 25,
    not an input) and only the rate is sent."""
    frames = req.bounds(frames_field) if frames_field else (fixed_frames, fixed_frames)
    fps = req.bounds(fps_field)
    asked = req.get("duration")
    candidates = [
        (min(max(round(asked * rate), frames[0]), frames[1]), rate) for rate in range(fps[0], fps[1] + 1)
    ]
    count, rate = min(
        candidates,
        key=lambda pair: (round(abs(pair[0] / pair[1] - asked), 6), abs(pair[1] - usual_fps), -pair[1]),
    )
    if frames_field:
        req.send(**{frames_field: count})
    req.send(**{fps_field: rate})
    req.made(count / rate, f"{_span(*frames)} frames at {_span(*fps)} fps", f"{count} frames at {rate} fps")


def _span(low: int, high: int) -> str:
    return f"{low}" if low == high else f"{low}-{high}"


# -- results ---------------------------------------------------------------------------------


def _size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size} bytes"


def video_result(
    action: str, model: Model, result: FalResult, call: EndpointCall, notes: list[str] | tuple[str, ...] = ()
) -> ToolResult:
    """The text and structured result of a video job: files, endpoint, request id, seed, notes."""
    output = generation_output(
        model,
        result,
        call,
        prompt=call.arguments.get("prompt"),
        notes=notes,
        files=find_files(result.data.get("video", result.data)),
        expect="video",
    )
    seconds = call.facts.get("seconds")
    length = f"{seconds:.3g} s " if seconds else ""
    seeded = f", seed {output.seed}" if output.seed is not None else ""
    lines = [
        f"{action} a {length}video with {model.alias} ({model.endpoint_id}){seeded}, "
        f"fal request {result.request_id}:"
    ]
    lines += [
        f"{file.url} ({file.content_type or 'video'}, {_size(file.file_size)})" for file in output.files
    ]
    lines += [f"Note: {note}" for note in output.notes]
    return ToolResult("\n".join(lines), output)
