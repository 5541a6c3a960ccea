"""An input checked against its endpoint's JSON Schema, with errors in fal's shape.

fal answers a bad input with 422 and `{"detail": [{"loc": ["body", ...], "msg", "type", "input"}]}`
(pydantic's error list). Here the schema is checked with jsonschema's Draft 2020-12 validator and each
error is translated to pydantic's type and wording. Stricter than fal on purpose: a top-level field
the schema does not name is refused ("extra_forbidden"), where fal would silently ignore it, so a
translator's misspelt field fails a test instead of being lost.
"""

from __future__ import annotations

import copy
from typing import Any

from .endpoints import Endpoint

_TYPES = {  # JSON Schema type -> (pydantic error type, message)
    "string": ("string_type", "Input should be a valid string"),
    "integer": ("int_type", "Input should be a valid integer"),
    "number": ("float_type", "Input should be a valid number"),
    "boolean": ("bool_type", "Input should be a valid boolean"),
    "array": ("list_type", "Input should be a valid list"),
    "object": ("dict_type", "Input should be a valid dictionary"),
    "null": ("none_required", "Input should be None"),
}
_BOUNDS = {  # keyword -> (pydantic error type, message prefix, ctx key)
    "minimum": ("greater_than_equal", "Input should be greater than or equal to", "ge"),
    "maximum": ("less_than_equal", "Input should be less than or equal to", "le"),
    "exclusiveMinimum": ("greater_than", "Input should be greater than", "gt"),
    "exclusiveMaximum": ("less_than", "Input should be less than", "lt"),
}


def _err(loc: list, type_: str, msg: str, value: Any, **ctx: Any) -> dict:
    error = {"loc": ["body", *loc], "msg": msg, "type": type_, "input": value}
    if ctx:
        error["ctx"] = ctx
    return error


def _expected(options: list) -> str:
    quoted = [repr(o) for o in options]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _translate(error) -> list[dict]:
    """One jsonschema error (the most relevant one under an anyOf) as pydantic-style errors."""
    from jsonschema.exceptions import best_match

    error = best_match([error])
    loc, value = list(error.absolute_path), error.instance
    keyword, wanted = error.validator, error.validator_value
    if keyword == "type":
        kinds = [wanted] if isinstance(wanted, str) else list(wanted)
        if "integer" in kinds and isinstance(value, float):
            return [
                _err(
                    loc,
                    "int_from_float",
                    "Input should be a valid integer, got a number with a fractional part",
                    value,
                )
            ]
        type_, msg = _TYPES.get(kinds[0], ("type_error", error.message))
        return [_err(loc, type_, msg, value)]
    if keyword in ("enum", "const"):
        options = list(wanted) if keyword == "enum" else [wanted]
        return [
            _err(
                loc,
                "literal_error",
                f"Input should be {_expected(options)}",
                value,
                expected=_expected(options),
            )
        ]
    if keyword in _BOUNDS:
        type_, msg, key = _BOUNDS[keyword]
        return [_err(loc, type_, f"{msg} {wanted}", value, **{key: wanted})]
    if keyword == "required":
        return [
            _err([*loc, name], "missing", "Field required", value)
            for name in wanted
            if isinstance(value, dict) and name not in value
        ]
    if keyword == "additionalProperties":
        known = error.schema.get("properties") or {}
        return [
            _err([*loc, name], "extra_forbidden", "Extra inputs are not permitted", item)
            for name, item in value.items()
            if name not in known
        ]
    if keyword in _LENGTHS:
        type_, what, unit, key = _LENGTHS[keyword]
        counted = f"{unit}{'s' * (wanted != 1)}"
        tail = f" after validation, not {len(value)}" if unit == "item" else ""
        return [_err(loc, type_, f"{what} {wanted} {counted}{tail}", value, **{key: wanted})]
    if keyword == "pattern":
        return [
            _err(
                loc,
                "string_pattern_mismatch",
                f"String should match pattern '{wanted}'",
                value,
                pattern=wanted,
            )
        ]
    if keyword == "multipleOf":
        return [
            _err(loc, "multiple_of", f"Input should be a multiple of {wanted}", value, multiple_of=wanted)
        ]
    return [_err(loc, "value_error", error.message, value)]


# keyword -> (pydantic error type, message start, what is counted, context key): fal's wording
_LENGTHS = {
    "minItems": ("too_short", "List should have at least", "item", "min_length"),
    "maxItems": ("too_long", "List should have at most", "item", "max_length"),
    "minLength": ("string_too_short", "String should have at least", "character", "min_length"),
    "maxLength": ("string_too_long", "String should have at most", "character", "max_length"),
}


def _validator(schema: dict):
    # Built once per schema object: the endpoint table holds each schema for the sandbox's life.
    from jsonschema import Draft202012Validator

    key = id(schema)
    cached = _VALIDATORS.get(key)
    if cached is None or cached[0] is not schema:
        cached = _VALIDATORS[key] = (schema, Draft202012Validator(schema))
    return cached[1]


_VALIDATORS: dict[int, tuple[dict, Any]] = {}


def defaults(schema: dict | None) -> dict:
    """The top-level defaults of an input schema (fal applies them; so does the output drawing)."""
    found = {}
    for name, prop in ((schema or {}).get("properties") or {}).items():
        if isinstance(prop, dict):
            if "default" in prop:
                found[name] = copy.deepcopy(prop["default"])
            elif "x-head-default" in prop:  # a default fal states that the vendored schema lost
                found[name] = copy.deepcopy(prop["x-head-default"])
    return found


def validate(endpoint: Endpoint, body: dict) -> tuple[dict, list[dict]]:
    """Check `body` against the endpoint's input schema: (arguments with defaults filled in, errors).

    With no input schema every input is taken as it is.
    """
    schema = endpoint.input_schema
    if schema is None:
        return dict(body), []
    properties = schema.get("properties") or {}
    errors = []
    if properties:  # refused here, before the schema's own checks, so each unknown field is named
        errors += [
            _err([name], "extra_forbidden", "Extra inputs are not permitted", value)
            for name, value in body.items()
            if name not in properties
        ]
    found = sorted(_validator(schema).iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])
    for error in found:
        if error.validator == "required" and not error.absolute_path:
            errors += [
                _err([name], "missing", "Field required", body)
                for name in error.validator_value
                if name not in body
            ]
        elif not (error.validator == "additionalProperties" and not error.absolute_path):
            errors += _translate(error)
    return {**defaults(schema), **body}, errors
