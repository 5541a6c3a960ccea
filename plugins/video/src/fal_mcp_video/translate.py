"""Helpers the video translators and tools share: building one endpoint's arguments with
notes for the user, turning a duration into what each model reads, and the result text.

A parameter a model cannot take is dropped with a note, never sent to be silently
ignored; one the user cannot do without (a last frame) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fal_mcp import (
    EndpointCall,
    FalResult,
    GenerationOutput,
    Model,
    ToolError,
    ToolResult,
    find_files,
    input_field,
)

AspectRatio = Literal["16:9", "9:16", "1:1"]
PACKAGE = __name__.split(".")[0]  # where the endpoints' schemas are vendored


@dataclass(frozen=True)
class VideoCall(EndpointCall):
    """An endpoint call, plus the length in seconds the endpoint was asked for where that is known."""

    seconds: float | None = None


class Request:
    """One endpoint's arguments and notes, built from a tool's validated arguments.

    Tool fields are read by name (missing ones read as None), so one translator serves
    every tool that offers its endpoint. The endpoint's limits (lengths, ranges, choices) are
    read from fal's schema of it, vendored in this pack, never repeated here.
    """

    def __init__(self, model: str, endpoint_id: str, args: Any) -> None:
        self.model = model  # how notes name the model
        self.endpoint_id = endpoint_id
        self.args = args
        self.arguments: dict[str, Any] = {}
        self.notes: list[str] = []
        self.seconds: float | None = None

    def get(self, name: str) -> Any:
        return getattr(self.args, name, None)

    def field(self, name: str) -> dict[str, Any]:
        """The endpoint's schema of input field `name`."""
        return input_field(PACKAGE, self.endpoint_id, name)

    def bounds(self, name: str) -> tuple[int, int]:
        field = self.field(name)
        return field["minimum"], field["maximum"]

    def choices(self, name: str) -> list:
        return list(self.field(name).get("enum", ()))

    def send(self, **fields: Any) -> None:
        """Send each field that has a value; None leaves the endpoint's own default. A text longer
        than the endpoint takes is refused (cutting it would change what is asked for)."""
        for name, value in fields.items():
            limit = self.field(name).get("maxLength")
            if isinstance(value, str) and limit is not None and len(value) > limit:
                raise ToolError(f"{name}: {self.model} takes at most {limit} characters (got {len(value)}); "
                                "shorten it")
        self.arguments.update({name: value for name, value in fields.items() if value is not None})

    def copy(self, *names: str) -> None:
        """Send tool fields the endpoint names the same way."""
        self.send(**{name: self.get(name) for name in names})

    def drop(self, name: str, why: str) -> None:
        if self.get(name) not in (None, ""):
            self.notes.append(f"{name} was not sent: {self.model} {why}")

    def require(self, name: str, why: str) -> None:
        if self.get(name) in (None, ""):
            raise ToolError(f"{name}: {self.model} {why}")

    def refuse(self, name: str, why: str) -> None:
        if self.get(name) is not None:
            raise ToolError(f"{name}: {self.model} {why}")

    def made(self, seconds: float, capability: str, detail: str = "") -> None:
        """Record the length asked of the endpoint; a note when it differs from the user's."""
        self.seconds = seconds
        asked = self.get("duration")
        if asked is not None and abs(seconds - asked) > 0.05:
            detail = f" ({detail})" if detail else ""
            self.notes.append(f"duration: {self.model} cannot make {asked:g} s (it makes {capability}); "
                              f"made {seconds:.3g} s{detail} instead, the nearest it can")

    def call(self) -> VideoCall:
        return VideoCall(self.arguments, tuple(self.notes), self.seconds)


# -- duration: what each model reads ------------------------------------------------------


def choice_duration(req: Request, name: str = "duration") -> None:
    """Models with a fixed menu of lengths, sent as strings (Kling: "5" or "10")."""
    lengths = sorted(int(choice) for choice in req.choices(name))
    asked = req.get("duration")
    seconds = min(lengths, key=lambda length: (abs(length - asked), length))  # a tie: the shorter, cheaper
    req.send(**{name: str(seconds)})
    req.made(seconds, " or ".join(f"{length} s" for length in lengths))


def frames_and_fps(req: Request, *, usual_fps: int, frames_field: str | None = "num_frames",
                   fps_field: str = "fps", fixed_frames: int | None = None) -> None:
    """Models whose length is frames / fps: the pair nearest the asked duration, and among
    equally near ones the frame rate nearest the model's usual one (then the smoother). The
    ranges are the endpoint's. `frames_field` None: the frame count is `fixed_frames` (SVD's 25,
    not an input) and only the rate is sent."""
    frames = req.bounds(frames_field) if frames_field else (fixed_frames, fixed_frames)
    fps = req.bounds(fps_field)
    asked = req.get("duration")
    candidates = [(min(max(round(asked * rate), frames[0]), frames[1]), rate)
                  for rate in range(fps[0], fps[1] + 1)]
    count, rate = min(candidates, key=lambda pair: (round(abs(pair[0] / pair[1] - asked), 6),
                                                    abs(pair[1] - usual_fps), -pair[1]))
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


def video_result(action: str, model: Model, result: FalResult, call: EndpointCall,
                 notes: list[str] | tuple[str, ...] = ()) -> ToolResult:
    """The text and structured result of a video job: files, endpoint, request id, seed, notes."""
    files = find_files(result.data.get("video", result.data))
    if not files:
        raise ToolError(f"{model.endpoint_id} finished but returned no video "
                        f"(fal request {result.request_id})")
    seconds = getattr(call, "seconds", None)
    for file in files:
        if file.duration is None:
            file.duration = seconds
    seed = result.data.get("seed")
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    notes = [*notes, *call.notes]
    output = GenerationOutput(files=files, endpoint=model.endpoint_id, model=model.alias,
                              request_id=result.request_id, seed=seed, prompt=call.arguments.get("prompt"),
                              notes=notes)
    length = f"{seconds:.3g} s " if seconds else ""
    seeded = f", seed {seed}" if seed is not None else ""
    lines = [f"{action} a {length}video with {model.alias} ({model.endpoint_id}){seeded}, "
             f"fal request {result.request_id}:"]
    lines += [f"{file.url} ({file.content_type or 'video'}, {_size(file.file_size)})" for file in files]
    lines += [f"Note: {note}" for note in notes]
    return ToolResult("\n".join(lines), output)
