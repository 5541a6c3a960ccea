"""fal's per-model OpenAPI documents, read into a compact field list, and input checked against it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from fal_mcp import ToolContext, ToolError, openapi_schemas, resolve_openapi

JSON_TYPES = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
}


class FieldInfo(BaseModel):
    model_config = ConfigDict(defer_build=True)

    name: str
    type: str
    required: bool = False
    default: Any = None
    enum: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""


class ModelSchema(BaseModel):
    model_config = ConfigDict(defer_build=True)

    endpoint_id: str
    inputs: list[FieldInfo]
    outputs: list[FieldInfo]


class EndpointSchema:
    """An endpoint's OpenAPI document, with its input and output schemas found."""

    def __init__(self, endpoint_id: str, doc: dict) -> None:
        self.endpoint_id = endpoint_id
        self.doc = doc
        self.input, self.output = openapi_schemas(doc, endpoint_id)

    def describe(self) -> ModelSchema:
        return ModelSchema(
            endpoint_id=self.endpoint_id,
            inputs=_fields(self.input, self.doc),
            outputs=_fields(self.output, self.doc),
        )

    def problems(self, value: dict) -> list[str]:
        return check_object(self.input, value, None, self.doc)


def type_name(schema: dict, doc: dict) -> str:
    schema = resolve_openapi(schema, doc)
    if "anyOf" in schema or "oneOf" in schema:
        return " | ".join(type_name(option, doc) for option in schema.get("anyOf", schema.get("oneOf")))
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array<{type_name(schema.get('items', {}), doc)}>"
    if kind == "object" and schema.get("title"):
        return schema["title"]
    return kind


def _fields(schema: dict, doc: dict) -> list[FieldInfo]:
    schema = resolve_openapi(schema, doc)
    required = set(schema.get("required", ()))
    fields = []
    for name, prop in schema.get("properties", {}).items():
        resolved = resolve_openapi(prop, doc)
        fields.append(
            FieldInfo(
                name=name,
                type=type_name(prop, doc),
                required=name in required,
                default=resolved.get("default"),
                enum=resolved.get("enum"),
                minimum=resolved.get("minimum"),
                maximum=resolved.get("maximum"),
                description=" ".join(str(resolved.get("description", "")).split())[:300],
            )
        )
    return sorted(fields, key=lambda f: (not f.required, f.name))


async def endpoint_schema(ctx: ToolContext, endpoint_id: str) -> EndpointSchema:
    """The endpoint's schema from fal's OpenAPI document (cached). ToolError if there is none."""
    page = await ctx.platform(
        "GET",
        "/models",
        params=[("endpoint_id", endpoint_id), ("expand", "openapi-3.0")],
        ttl=ctx.settings.catalog_ttl,
    )
    entry = next((m for m in page.get("models", []) if m.get("endpoint_id") == endpoint_id), None)
    if entry is None:
        raise ToolError(
            f"model: fal's catalogue has no endpoint {endpoint_id!r}; list_models finds real ones"
        )
    if not entry.get("openapi"):
        raise ToolError(
            f"model: fal publishes no schema for {endpoint_id}, so it cannot be described or checked"
        )
    return EndpointSchema(endpoint_id, entry["openapi"])


def check(schema: dict, value: Any, where: str, doc: dict) -> list[str]:
    """Problems with `value` against a JSON schema (the subset fal uses), each naming the field."""
    schema = resolve_openapi(schema, doc)
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        attempts = [check(option, value, where, doc) for option in options]
        if any(not problems for problems in attempts):
            return []
        return [f"{where}: expected {type_name(schema, doc)}, got {value!r:.60}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: must be one of {', '.join(map(repr, schema['enum']))} (got {value!r:.60})"]
    kind = schema.get("type")
    expected = JSON_TYPES.get(kind)
    if expected and (
        not isinstance(value, expected) or (kind in ("integer", "number") and isinstance(value, bool))
    ):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    problems = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: must be >= {schema['minimum']} (got {value})")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: must be <= {schema['maximum']} (got {value})")
    if kind == "array":
        for index, item in enumerate(value):
            problems += check(schema.get("items", {}), item, f"{where}[{index}]", doc)
    if kind == "object" or "properties" in schema:
        problems += check_object(schema, value, where, doc)
    return problems


def check_object(schema: dict, value: dict, where: str | None, doc: dict) -> list[str]:
    """Required fields, unknown fields (fal would silently ignore them) and each field's value."""
    properties = schema.get("properties", {})
    prefix = f"{where}." if where else ""
    problems = [f"{prefix}{name}: required" for name in schema.get("required", ()) if name not in value]
    for name, item in value.items():
        if name not in properties:
            if properties:
                problems.append(
                    f"{prefix}{name}: not an input of this model (it takes: {', '.join(properties)})"
                )
            continue
        problems += check(properties[name], item, f"{prefix}{name}", doc)
    return problems
