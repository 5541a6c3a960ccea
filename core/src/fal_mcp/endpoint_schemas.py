"""fal's published schemas: those of the endpoints a pack registers, vendored in the pack, and fal's
live OpenAPI documents, with how the two differ (`fal-mcp models check`).

A pack keeps one file per endpoint in the `schemas` folder of its package, named by the endpoint id
with `/` replaced by `__` (`fal-ai/flux/schnell` -> `schemas/fal-ai__flux__schnell.json`), holding
`{"endpoint_id", "source", "date", "input", "output"}`: JSON Schemas (draft 2020-12) of the
endpoint's input and output, and where and when they were taken from. They are read from the
installed package (never from the network) the first time a model is asked for them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any


def schema_file_name(endpoint_id: str) -> str:
    return endpoint_id.replace("/", "__") + ".json"


@functools.lru_cache(maxsize=512)
def vendored_schema(package: str, endpoint_id: str) -> dict[str, Any] | None:
    """The vendored schema document of `endpoint_id` in `package`, or None if the pack has none."""
    from importlib import resources

    try:
        path = resources.files(package).joinpath("schemas", schema_file_name(endpoint_id))
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (ModuleNotFoundError, FileNotFoundError):
        return None


# -- fal's live OpenAPI documents ----------------------------------------------------------------------


def resolve_openapi(node: Any, doc: dict[str, Any]) -> Any:
    """Follow `$ref`s (and single-entry allOf wrappers) of an OpenAPI document to the schema they name."""
    while isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            node = {
                **doc.get("components", {}).get("schemas", {}).get(name, {}),
                **{k: v for k, v in node.items() if k != "$ref"},
            }
        elif len(node.get("allOf", ())) == 1:
            node = {
                **resolve_openapi(node["allOf"][0], doc),
                **{k: v for k, v in node.items() if k != "allOf"},
            }
        else:
            return node
    return node


def openapi_schemas(doc: dict[str, Any], endpoint_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input, output) schemas of an endpoint's fal OpenAPI document: the body of its POST, and the
    answer of its result route; {} where the document has none."""

    def find(method: str, matches: Callable[[str], bool], part: str) -> dict[str, Any]:
        for path, operations in doc.get("paths", {}).items():
            operation = operations.get(method)
            if operation and matches(path):
                if part == "request":
                    content = operation.get("requestBody", {}).get("content", {})
                else:
                    content = operation.get("responses", {}).get("200", {}).get("content", {})
                schema = content.get("application/json", {}).get("schema")
                if schema:
                    resolved: dict[str, Any] = resolve_openapi(schema, doc)
                    return resolved
        return {}

    return (
        find("post", lambda path: path.rstrip("/").endswith(endpoint_id), "request"),
        find(
            "get",
            lambda path: "/requests/{request_id}" in path and not path.endswith(("/status", "/cancel")),
            "response",
        ),
    )


def _shape(schema: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """What matters of a field for a caller: its type(s), choices and bounds."""
    schema = resolve_openapi(schema, doc)
    if not isinstance(schema, dict):
        return {}
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        kinds = sorted({str(_shape(option, doc).get("type")) for option in options})
        enum = sorted({str(v) for option in options for v in resolve_openapi(option, doc).get("enum", ())})
        shape: dict[str, Any] = {"type": " | ".join(kinds)}
        if enum:
            shape["enum"] = enum
        return shape
    shape = {"type": schema.get("type", "any")}
    for key in ("enum", "minimum", "maximum", "maxLength", "maxItems", "minItems"):
        if key in schema:
            shape[key] = sorted(map(str, schema[key])) if key == "enum" else schema[key]
    return shape


def compare_inputs(vendored: dict[str, Any], live: dict[str, Any], live_doc: dict[str, Any]) -> list[str]:
    """How fal's live input schema differs from the vendored one, field by field (top level)."""
    ours, theirs = vendored.get("properties", {}), live.get("properties", {})
    our_required, their_required = set(vendored.get("required", ())), set(live.get("required", ()))
    changes = [
        f"+ {name} ({_shape(theirs[name], live_doc).get('type')})"
        + (" required" if name in their_required else "")
        for name in sorted(set(theirs) - set(ours))
    ]
    changes += [f"- {name}" for name in sorted(set(ours) - set(theirs))]
    for name in sorted(set(ours) & set(theirs)):
        before, after = _shape(ours[name], vendored), _shape(theirs[name], live_doc)
        differences = [
            f"{key} {before.get(key)!r} -> {after.get(key)!r}"
            for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)
        ]
        if (name in our_required) != (name in their_required):
            differences.append("now required" if name in their_required else "no longer required")
        if differences:
            changes.append(f"~ {name}: " + "; ".join(differences))
    return changes
