"""What packs hand to the core: frozen dataclasses, validated on construction.

A pack's hooks yield these; the core turns them into MCP tools and model
tables. A value that breaks a rule raises `ValueError` at once, naming the
field, so a broken pack is caught when it loads, not when a user calls it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from .context import ToolContext

TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MODEL_ALIAS = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# fal endpoint ids: owner/app[/sub/path], e.g. fal-ai/flux/dev/image-to-image
ENDPOINT_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)+$")
CATEGORIES = ("image", "video", "audio", "utility", "text")


def _require(condition: bool, owner: str, field_name: str, problem: str) -> None:
    if not condition:
        raise ValueError(f"{owner}.{field_name}: {problem}")


def _one_line(value: Any, owner: str, field_name: str) -> None:
    _require(isinstance(value, str) and value.strip() != "", owner, field_name, "must be a non-empty string")
    _require("\n" not in value, owner, field_name, "must be one line")


@dataclass(frozen=True)
class ToolHints:
    """MCP tool annotations, in plain words."""

    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = True


ToolHandler = Callable[[Any, "ToolContext"], Awaitable["ToolResult"]]


@dataclass(frozen=True)
class Tool:
    """One MCP tool. `handler(arguments, ctx)` gets an instance of `input_model`."""

    name: str
    title: str
    description: str
    input_model: type[BaseModel]
    handler: ToolHandler
    output_model: type[BaseModel] | None = None
    hints: ToolHints = field(default_factory=ToolHints)
    # Which per-category timeout applies (FAL_MCP_TIMEOUT_<CATEGORY>).
    category: str = "image"
    # Name of the input field that picks a registered model, if any: the
    # core lists the registered aliases in its schema and checks the choice.
    model_field: str | None = None

    def __post_init__(self) -> None:
        owner = f"Tool({self.name!r})"
        _require(isinstance(self.name, str) and bool(TOOL_NAME.match(self.name)), owner, "name",
                 "must match [a-z][a-z0-9_]* (at most 64 characters)")
        _one_line(self.title, owner, "title")
        _require(isinstance(self.description, str) and self.description.strip() != "", owner, "description",
                 "must be a non-empty string")
        _require(isinstance(self.input_model, type) and issubclass(self.input_model, BaseModel), owner,
                 "input_model", "must be a pydantic BaseModel subclass")
        _require(inspect.iscoroutinefunction(self.handler), owner, "handler", "must be an async function")
        _require(self.output_model is None or (isinstance(self.output_model, type)
                                               and issubclass(self.output_model, BaseModel)),
                 owner, "output_model", "must be a pydantic BaseModel subclass or None")
        _require(isinstance(self.hints, ToolHints), owner, "hints", "must be a ToolHints")
        _require(self.category in CATEGORIES, owner, "category", f"must be one of {', '.join(CATEGORIES)}")
        _require(self.model_field is None or self.model_field in self.input_model.model_fields, owner,
                 "model_field", "must name a field of input_model")


@dataclass(frozen=True)
class EndpointCall:
    """What a model's translator produces: the endpoint input, and notes for the user
    (e.g. a parameter the model cannot take, dropped rather than silently ignored)."""

    arguments: dict[str, Any]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Model:
    """A fal endpoint offered under a short alias by one tool.

    `build_input(arguments)` turns the tool's validated arguments into the
    endpoint's own field names and values; `read_output(data)`, when given,
    turns the endpoint's output into what the tool reports (default: the
    tool reads it itself).
    """

    alias: str
    endpoint_id: str
    tool: str
    category: str
    description: str
    build_input: Callable[[Any], EndpointCall]
    read_output: Callable[[Mapping[str, Any]], Any] | None = None
    default: bool = False

    def __post_init__(self) -> None:
        owner = f"Model({self.alias!r})"
        _require(isinstance(self.alias, str) and bool(MODEL_ALIAS.match(self.alias)), owner, "alias",
                 "must match [a-z0-9][a-z0-9_.-]* (at most 64 characters)")
        _require(isinstance(self.endpoint_id, str) and bool(ENDPOINT_ID.match(self.endpoint_id)), owner,
                 "endpoint_id", "must look like 'owner/app[/path]', e.g. 'fal-ai/flux/schnell'")
        _require(isinstance(self.tool, str) and bool(TOOL_NAME.match(self.tool)), owner, "tool",
                 "must be a tool name")
        _require(self.category in CATEGORIES, owner, "category", f"must be one of {', '.join(CATEGORIES)}")
        _one_line(self.description, owner, "description")
        _require(callable(self.build_input), owner, "build_input", "must be callable")
        _require(self.read_output is None or callable(self.read_output), owner, "read_output",
                 "must be callable or None")


@dataclass(frozen=True)
class PriceHint:
    """An offline price for an endpoint, shown when fal's pricing API cannot be reached."""

    endpoint_id: str
    unit_price: float
    unit: str
    currency: str = "USD"

    def __post_init__(self) -> None:
        owner = f"PriceHint({self.endpoint_id!r})"
        _require(isinstance(self.endpoint_id, str) and bool(ENDPOINT_ID.match(self.endpoint_id)), owner,
                 "endpoint_id", "must look like 'owner/app[/path]'")
        _require(isinstance(self.unit_price, (int, float)) and self.unit_price >= 0, owner, "unit_price",
                 "must be a number >= 0")
        _one_line(self.unit, owner, "unit")
        _require(isinstance(self.currency, str) and bool(re.match(r"^[A-Z]{3}$", self.currency)), owner,
                 "currency", "must be a three-letter code such as USD")


@dataclass(frozen=True)
class Recommendation:
    """A pack's advice: for tasks described by `keywords`, use `model` (alias or endpoint id)."""

    model: str
    keywords: tuple[str, ...]
    reason: str
    category: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        owner = f"Recommendation({self.model!r})"
        _require(isinstance(self.model, str) and self.model.strip() != "", owner, "model", "must be non-empty")
        _require(isinstance(self.keywords, tuple) and len(self.keywords) > 0
                 and all(isinstance(k, str) and k.strip() for k in self.keywords),
                 owner, "keywords", "must be a non-empty tuple of non-empty strings")
        _one_line(self.reason, owner, "reason")
        _require(self.category in CATEGORIES, owner, "category", f"must be one of {', '.join(CATEGORIES)}")
        _require(isinstance(self.weight, (int, float)) and 0 < self.weight <= 10, owner, "weight",
                 "must be in (0, 10]")


@dataclass
class ToolResult:
    """What a tool handler returns: readable text, structured content (an
    instance of the tool's output_model, or a dict), and images to show inline
    as (bytes, mime type)."""

    text: str
    structured: BaseModel | Mapping[str, Any] | None = None
    images: list[tuple[bytes, str]] = field(default_factory=list)
