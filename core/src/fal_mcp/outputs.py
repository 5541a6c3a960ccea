"""The shared shape of what generation tools return, and the reader that finds
files in a fal output wherever the model put them."""

from __future__ import annotations

import types
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator


class ToolInput(BaseModel):
    """Base for tool input models: unknown fields are refused, naming the field.

    A choice among fixed words (a `Literal` field, in lists and optional ones too) is written with
    underscores, as fal writes its own (`landscape_16_9`), and listed so; the same word with hyphens
    (`bottom-right`) is taken as well, here, for every tool: `spelled_choices`."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _choice_spellings(cls, data: Any) -> Any:
        return spelled_choices(cls, data)


def _words(annotation: Any) -> frozenset[str]:
    """The string values of the Literals in `annotation` (through Optional, unions, Annotated, lists)."""
    origin = get_origin(annotation)
    if origin is Literal:
        return frozenset(value for value in get_args(annotation) if isinstance(value, str))
    if origin in (Union, types.UnionType, Annotated, list, tuple, set, frozenset):
        args = get_args(annotation)[:1] if origin is Annotated else get_args(annotation)
        return frozenset().union(*(_words(arg) for arg in args))
    return frozenset()


@cache
def _choices(model: type[BaseModel]) -> dict[str, frozenset[str]]:
    """Field name (and alias) -> the words it may take, for the fields that take fixed words."""
    found: dict[str, frozenset[str]] = {}
    for name, field in model.model_fields.items():
        words = _words(field.annotation)
        if words:
            found[name] = words
            if field.alias:
                found[field.alias] = words
    return found


def _respelled(value: Any, words: frozenset[str]) -> Any:
    if isinstance(value, str) and value not in words:
        for other in (value.replace("-", "_"), value.replace("_", "-")):
            if other in words:
                return other
    if isinstance(value, list):
        return [_respelled(item, words) for item in value]
    return value


def spelled_choices(model: type[BaseModel], data: Any) -> Any:
    """`data` (a tool's arguments) with each choice given in the other spelling (hyphens for
    underscores, or the reverse) replaced by the listed one; anything else is left to validation."""
    if not isinstance(data, dict):
        return data
    choices = _choices(model)
    changed = {name: _respelled(value, choices[name]) for name, value in data.items() if name in choices}
    changed = {name: value for name, value in changed.items() if value != data[name]}
    return {**data, **changed} if changed else data


class OutputFile(BaseModel):
    model_config = ConfigDict(defer_build=True)

    url: str = Field(description="Where the file can be downloaded")
    content_type: str | None = Field(None, description="MIME type, e.g. image/png")
    width: int | None = None
    height: int | None = None
    duration: float | None = Field(None, description="Length in seconds, for audio and video")
    file_size: int | None = Field(None, description="Size in bytes")
    local_path: str | None = Field(None, description="Where the file was saved locally, if it was")
    # The inline preview of a file made here (delivery.preview_of: from the image in memory), so that
    # delivering it neither downloads nor decodes our own output again. Never serialised.
    _preview: tuple[bytes, str] | None = PrivateAttr(None)


class JobHandoff(BaseModel):
    """A call that returned before its job finished: the job goes on, and this is how to get its result."""

    model_config = ConfigDict(defer_build=True)

    job_id: str
    status: str
    progress: str | None = None
    how: str = Field("check_job with this job_id", description="How to get the result")


class Receipt(BaseModel):
    """What a call was estimated to cost before it was submitted, and what its output cost."""

    model_config = ConfigDict(defer_build=True)

    estimate: float = Field(description="USD estimated before submitting")
    cost: float = Field(description="USD for what was made: its units × the unit price")
    units: float
    unit: str = Field(description="fal's billing unit, e.g. megapixel, second, image")
    unit_price: float
    basis: str = Field(description="What was counted, e.g. 2 × 1024x1024 (1.05 megapixels)")
    estimated: bool = Field(
        False,
        description="True where fal's unit price was not available or the output did not tell its size",
    )


class GenerationOutput(BaseModel):
    """What every generation tool returns as structured content."""

    model_config = ConfigDict(defer_build=True)

    files: list[OutputFile]
    endpoint: str = Field(description="The fal endpoint that produced the files")
    model: str | None = Field(None, description="The alias the endpoint was chosen by")
    request_id: str = Field(description="fal request id, to find the job on fal")
    seed: int | None = None
    prompt: str | None = Field(None, description="The prompt that was sent, where there was one")
    notes: list[str] = Field(default_factory=list, description="What was adapted or dropped, and why")
    cost: Receipt | None = Field(None, description="The estimate before and the cost after, in USD")
    job: JobHandoff | None = Field(
        None,
        description="Set when the call returned before its job finished "
        "(files is empty then): the job that will make them",
    )


_Number = TypeVar("_Number", int, float)


def _as_file(value: Mapping[str, Any]) -> OutputFile:
    def number(key: str, kind: type[_Number]) -> _Number | None:
        raw = value.get(key)
        return kind(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None

    return OutputFile(
        url=value["url"],
        content_type=value.get("content_type"),
        width=number("width", int),
        height=number("height", int),
        duration=number("duration", float),
        file_size=number("file_size", int),
    )


def find_files(data: Any) -> list[OutputFile]:
    """Every `{url: ...}` object in a fal output, depth first, in order."""
    # A stack, not a recursive closure: that would be a reference cycle holding the files found
    found: list[OutputFile] = []
    pending = [data]
    while pending:
        node = pending.pop()
        if isinstance(node, Mapping):
            if isinstance(node.get("url"), str) and node["url"].startswith(("http://", "https://", "data:")):
                found.append(_as_file(node))
            else:
                pending.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            pending.extend(reversed(node))
    return found
