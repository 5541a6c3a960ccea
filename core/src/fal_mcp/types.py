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
# Categories are open (a pack may bring "3d" or "speech"): one short lowercase word each.
CATEGORY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


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
        _require(
            isinstance(self.name, str) and bool(TOOL_NAME.match(self.name)),
            owner,
            "name",
            "must match [a-z][a-z0-9_]* (at most 64 characters)",
        )
        _one_line(self.title, owner, "title")
        _require(
            isinstance(self.description, str) and self.description.strip() != "",
            owner,
            "description",
            "must be a non-empty string",
        )
        _require(
            isinstance(self.input_model, type) and issubclass(self.input_model, BaseModel),
            owner,
            "input_model",
            "must be a pydantic BaseModel subclass",
        )
        _require(inspect.iscoroutinefunction(self.handler), owner, "handler", "must be an async function")
        _require(
            self.output_model is None
            or (isinstance(self.output_model, type) and issubclass(self.output_model, BaseModel)),
            owner,
            "output_model",
            "must be a pydantic BaseModel subclass or None",
        )
        _require(isinstance(self.hints, ToolHints), owner, "hints", "must be a ToolHints")
        _require(
            isinstance(self.category, str) and bool(CATEGORY.match(self.category)),
            owner,
            "category",
            "must be one short lowercase word, e.g. image, video, audio",
        )
        _require(
            self.model_field is None or self.model_field in self.input_model.model_fields,
            owner,
            "model_field",
            "must name a field of input_model",
        )


@dataclass(frozen=True)
class EndpointCall:
    """What a model's translator produces: the endpoint input, notes for the user (e.g. a parameter
    the model cannot take, dropped rather than silently ignored), and facts the result needs that the
    input alone does not say plainly (e.g. {"seconds": 5.0}, the length asked of the endpoint).

    Build one with `fal_mcp.EndpointInput`; `fal_mcp.generation_output` reads it back."""

    arguments: dict[str, Any]
    notes: tuple[str, ...] = ()
    # Not part of equality or hashing: a plain record for the result, read with .get().
    facts: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Model:
    """A fal endpoint offered under a short alias by one tool.

    `build_input(arguments)` turns the tool's validated arguments into the
    endpoint's own field names and values; `read_output(data)`, when given,
    turns the endpoint's output into what the tool reports (default: the
    tool reads it itself). `category` is the tool's unless given: the registry
    fills it in when it loads the model (`with_tool_category`).
    """

    alias: str
    endpoint_id: str
    tool: str
    description: str
    build_input: Callable[[Any], EndpointCall]
    category: str | None = None
    read_output: Callable[[Mapping[str, Any]], Any] | None = None
    default: bool = False
    # {endpoint field: the tool argument it is made from}, for the fields named otherwise than their
    # argument (e.g. {"tags": "prompt"}): the core's input check names the argument a user can change.
    # Fields not listed here are matched to an argument of the same name.
    field_arguments: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        owner = f"Model({self.alias!r})"
        _require(
            isinstance(self.alias, str) and bool(MODEL_ALIAS.match(self.alias)),
            owner,
            "alias",
            "must match [a-z0-9][a-z0-9_.-]* (at most 64 characters)",
        )
        _require(
            isinstance(self.endpoint_id, str) and bool(ENDPOINT_ID.match(self.endpoint_id)),
            owner,
            "endpoint_id",
            "must look like 'owner/app[/path]', e.g. 'fal-ai/flux/schnell'",
        )
        _require(
            isinstance(self.tool, str) and bool(TOOL_NAME.match(self.tool)),
            owner,
            "tool",
            "must be a tool name",
        )
        _require(
            self.category is None or (isinstance(self.category, str) and bool(CATEGORY.match(self.category))),
            owner,
            "category",
            "must be None (the tool's) or one short lowercase word, e.g. image, video",
        )
        _one_line(self.description, owner, "description")
        _require(callable(self.build_input), owner, "build_input", "must be callable")
        _require(
            self.read_output is None or callable(self.read_output),
            owner,
            "read_output",
            "must be callable or None",
        )
        _require(
            isinstance(self.field_arguments, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in self.field_arguments.items()),
            owner,
            "field_arguments",
            "must map endpoint field names to tool argument names",
        )

    def with_tool_category(self, tool: Tool | None) -> Model:
        """This model with its tool's category filled in, when it names none (the registry calls this
        once every pack is loaded: the tool may come from another pack)."""
        import dataclasses

        if self.category is not None or tool is None:
            return self
        return dataclasses.replace(self, category=tool.category)

    @property
    def package(self) -> str:
        """The package that registers this model (where its vendored schema lives): the top-level package
        of its build_input's module (through functools.partial wrappers)."""
        import functools

        target = self.build_input
        while isinstance(target, functools.partial):
            target = target.func
        return (getattr(target, "__module__", None) or "").split(".")[0]

    def schema(self) -> dict[str, Any] | None:
        """fal's published schema document of this endpoint, as vendored by its pack (endpoint_schemas.py)."""
        from .endpoint_schemas import vendored_schema

        return vendored_schema(self.package, self.endpoint_id)

    def input_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of this endpoint's input, or None if its pack vendors none."""
        document = self.schema()
        return document.get("input") if document else None

    def output_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of this endpoint's output, or None if its pack vendors none."""
        document = self.schema()
        return document.get("output") if document else None


@dataclass(frozen=True)
class PriceHint:
    """An offline price for an endpoint, shown when fal's pricing API cannot be reached."""

    endpoint_id: str
    unit_price: float
    unit: str
    currency: str = "USD"

    def __post_init__(self) -> None:
        owner = f"PriceHint({self.endpoint_id!r})"
        _require(
            isinstance(self.endpoint_id, str) and bool(ENDPOINT_ID.match(self.endpoint_id)),
            owner,
            "endpoint_id",
            "must look like 'owner/app[/path]'",
        )
        _require(
            isinstance(self.unit_price, (int, float)) and self.unit_price >= 0,
            owner,
            "unit_price",
            "must be a number >= 0",
        )
        _one_line(self.unit, owner, "unit")
        _require(
            isinstance(self.currency, str) and bool(re.match(r"^[A-Z]{3}$", self.currency)),
            owner,
            "currency",
            "must be a three-letter code such as USD",
        )


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
        _require(
            isinstance(self.model, str) and self.model.strip() != "", owner, "model", "must be non-empty"
        )
        _require(
            isinstance(self.keywords, tuple)
            and len(self.keywords) > 0
            and all(isinstance(k, str) and k.strip() for k in self.keywords),
            owner,
            "keywords",
            "must be a non-empty tuple of non-empty strings",
        )
        _one_line(self.reason, owner, "reason")
        _require(
            isinstance(self.category, str) and bool(CATEGORY.match(self.category)),
            owner,
            "category",
            "must be one short lowercase word, e.g. image, video, audio",
        )
        _require(
            isinstance(self.weight, (int, float)) and 0 < self.weight <= 10,
            owner,
            "weight",
            "must be in (0, 10]",
        )


@dataclass
class ToolResult:
    """What a tool handler returns: readable text, structured content (an
    instance of the tool's output_model, or a dict), and images to show inline
    as (bytes, mime type)."""

    text: str
    structured: BaseModel | Mapping[str, Any] | None = None
    images: list[tuple[bytes, str]] = field(default_factory=list)
