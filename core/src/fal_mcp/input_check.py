"""The core's one check of what goes to fal: a model's built input against fal's published schema of
its endpoint (vendored by its pack, see endpoint_schemas.py), before anything is submitted or paid for.

fal refuses some bad inputs only once the job runs, and silently ignores fields it does not know; a
translator's mistake or a limit of one model (a prompt too long, a duration it cannot make) is caught
here instead, with a message naming the tool's argument and the model's real limit.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import ToolError

if TYPE_CHECKING:
    from .types import Model

SHOWN_CHOICES = 12  # longer enums (e.g. 100 language codes) are cut in messages


@functools.lru_cache(maxsize=512)
def _validator(package: str, endpoint_id: str) -> Any:
    """The compiled validator of an endpoint's vendored input schema (once per endpoint), or None."""
    from .endpoint_schemas import vendored_schema

    document = vendored_schema(package, endpoint_id)
    schema = document.get("input") if document else None
    if not schema:
        return None
    from jsonschema import Draft202012Validator  # heavy: only once a model is first called

    return Draft202012Validator(schema)


def input_field(package: str, endpoint_id: str, name: str) -> dict[str, Any]:
    """The vendored input schema of one field of an endpoint ({} if the pack vendors none), for
    translators that read a model's limits (lengths, ranges, choices) instead of repeating them."""
    from .endpoint_schemas import vendored_schema

    document = vendored_schema(package, endpoint_id) or {}
    return (document.get("input") or {}).get("properties", {}).get(name, {})


def check_input(
    model: Model, arguments: Mapping[str, Any], tool_arguments: Any = None, tool: str | None = None
) -> None:
    """ToolError if `arguments` (what `model.build_input` made) breaks the endpoint's schema or has a
    field it does not know (fal would ignore it); nothing when the pack vendors no schema."""
    validator = _validator(model.package, model.endpoint_id)
    if validator is None:
        return
    # fal ignores fields it does not know; refused here unless the schema itself says what extras do.
    known = validator.schema.get("properties")
    open_ended = known is None or "additionalProperties" in validator.schema
    unknown = [] if open_ended else [name for name in arguments if name not in known]
    if not unknown and validator.is_valid(arguments):
        return
    problems = [
        f"{_where(model, [name], tool_arguments)}: {model.endpoint_id} has no such input (fal would "
        f"ignore it; model {model.alias} sent it)"
        for name in unknown
    ]
    errors = sorted(validator.iter_errors(arguments), key=lambda error: list(map(str, error.absolute_path)))
    problems += [_describe(model, error, tool_arguments) for error in errors]
    # several fields may be wrong at once: one ToolError naming each, not an ArgumentError of one field
    raise ToolError(
        f"Invalid arguments for {tool or model.tool}: " + "; ".join(problems) + " (nothing was sent to fal)",
        kind="refused",
    )


def _argument(model: Model, name: str, tool_arguments: Any) -> str | None:
    """The tool argument an endpoint field is made from: the model's map, else one of the same name."""
    if name in model.field_arguments:
        return model.field_arguments[name]
    fields = getattr(type(tool_arguments), "model_fields", None) or getattr(
        tool_arguments, "__dataclass_fields__", {}
    )
    return name if name in fields else None


def _where(model: Model, path: list, tool_arguments: Any) -> str:
    sent = ".".join(map(str, path))
    argument = _argument(model, str(path[0]), tool_arguments) if path else None
    if argument is None:
        return sent or "input"
    return argument if argument == sent else f"{argument} (sent as {sent})"


def _value(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _choices(values: list) -> str:
    shown = [_value(v) for v in values[:SHOWN_CHOICES]]
    if len(values) > SHOWN_CHOICES:
        return "one of " + ", ".join(shown) + f", ... ({len(values)} values)"
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _limit(error: Any) -> tuple[str, str]:
    """(what the endpoint takes, what it got) for one schema error."""
    keyword, limit, value = error.validator, error.validator_value, error.instance
    got = _value(value)
    if keyword in ("anyOf", "oneOf") and error.context:
        # Prefer the branch of the value's own type (an enum of strings over an object branch).
        inner = [e for e in error.context if e.validator != "type"] or list(error.context)
        if all(e.validator == "type" for e in inner):
            kinds = [e.validator_value for e in inner]
            return "a " + " or ".join(k if isinstance(k, str) else "/".join(k) for k in kinds), got
        return _limit(inner[0])
    if keyword == "enum":
        return _choices(list(limit)), got
    if keyword == "const":
        return f"only {_value(limit)}", got
    if keyword == "type":
        return "a " + (limit if isinstance(limit, str) else " or ".join(limit)), got
    words = {
        "minimum": "at least {}",
        "maximum": "at most {}",
        "exclusiveMinimum": "more than {}",
        "exclusiveMaximum": "less than {}",
        "multipleOf": "a multiple of {}",
    }
    if keyword in words:
        return words[keyword].format(limit), got
    sized = {
        "minLength": ("at least", "characters"),
        "maxLength": ("at most", "characters"),
        "minItems": ("at least", "items"),
        "maxItems": ("at most", "items"),
    }
    if keyword in sized:
        bound, unit = sized[keyword]
        return f"{bound} {limit} {unit}", f"{len(value)} {unit}"
    if keyword == "pattern":
        return f"text matching {limit}", got
    return error.message, got


def _describe(model: Model, error: Any, tool_arguments: Any) -> str:
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        return "; ".join(
            f"{_where(model, [*path, name], tool_arguments)}: {model.endpoint_id} requires it"
            for name in missing
        )
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = error.schema.get("properties", {})
        extra = ", ".join(name for name in error.instance if name not in allowed)
        return f"{_where(model, path, tool_arguments)}: {model.endpoint_id} takes no {extra} here"
    takes, got = _limit(error)
    return f"{_where(model, path, tool_arguments)}: {model.endpoint_id} takes {takes} (got {got})"
