"""What the sandbox serves: the endpoints the installed fal-mcp packs register.

The sandbox knows no model of its own. `installed()` loads the packs with the core's plugin loader
and makes one `Endpoint` per registered endpoint id: the input and output JSON Schemas its pack
vendors (None when it vendors none), a display name and description from the model, and the pack's
price hint. Tests build `Endpoint`s directly to serve schemas of their own.

Also here: fal's per-model OpenAPI document, built from those schemas. Stdlib only.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("fal_mcp_sandbox")

# How many units one call typically uses, for "historical" price estimates: a guess per unit, since
# the sandbox has no call history (a second-priced video is about 5 s).
TYPICAL_UNITS = {"second": 5.0, "seconds": 5.0, "minute": 0.5}
MEDIA_FIELD_KINDS = (("video", "video"), ("audio", "audio"), ("image", "image"), ("mask", "image"))


@dataclass(frozen=True)
class Endpoint:
    id: str
    input_schema: dict | None = None  # JSON Schema (draft 2020-12); None: any input is taken
    output_schema: dict | None = None  # None: the output is drawn from `kind` alone
    name: str = ""  # display name
    description: str = ""
    kind: str = "image"  # the registering model's category: image | video | audio | text | utility
    unit_price: float | None = None  # USD per `unit`; None: no price hint
    unit: str = "request"
    highlighted: bool = False  # the default model of some tool
    tags: tuple[str, ...] = ()

    @property
    def app(self) -> str:
        """owner/alias: the part of the endpoint id used in queue URLs."""
        return "/".join(self.id.split("/")[:2])

    @property
    def display_name(self) -> str:
        return self.name or self.id

    @property
    def typical_units(self) -> float:
        return TYPICAL_UNITS.get(self.unit.strip().lower(), 1.0)

    @functools.cached_property
    def category(self) -> str:
        """A fal-style category (text-to-image, image-to-video, speech-to-text, ...) read from the schemas."""
        out = output_kind(self.output_schema) or self.kind
        source = "text"
        if self.input_schema:
            required = self.input_schema.get("required") or ()
            source = next(
                (
                    kind
                    for name in required
                    for word, kind in MEDIA_FIELD_KINDS
                    if word in name and name.endswith(("_url", "_urls"))
                ),
                "text",
            )
            if out == "audio" and "voice" in self.input_schema.get("properties", {}):
                out = "speech"
        if source == "audio" and out == "text":
            source = "speech"
        return f"{source}-to-{out}"


def output_kind(schema: dict | None) -> str | None:
    """image, video or audio for the first file an output schema holds; "text" for a text answer."""
    if not schema:
        return None
    for name, prop in (schema.get("properties") or {}).items():
        items = prop.get("items") if prop.get("type") == "array" else None
        node = items if isinstance(items, dict) else prop
        if "url" in (node.get("properties") or {}):
            return file_kind(name, node)
    return "text" if "text" in (schema.get("properties") or {}) else None


def file_kind(name: str, schema: dict, fallback: str = "image") -> str:
    """What a file field holds, from its name, then its title and description, then its content type."""
    texts = [name.lower(), str(schema.get("title", "")).lower(), str(schema.get("description", "")).lower()]
    content_type = (schema.get("properties") or {}).get("content_type", {}).get("default", "")
    texts.append(str(content_type).split("/")[0])
    for text in texts:
        for kind, words in (
            ("video", ("video",)),
            ("audio", ("audio", "speech", "music", "sound", "voice")),
            ("image", ("image", "mask", "picture", "photo")),
        ):
            if any(word in text for word in words):
                return kind
    return fallback


# --- the installed packs ------------------------------------------------------------------------


def from_registry(registry: Any) -> dict[str, Endpoint]:
    """One Endpoint per endpoint id the registry's models use (the first model registering it names it)."""
    prices = {}
    for hint in registry.prices:
        prices.setdefault(hint.endpoint_id, hint)
    endpoints: dict[str, Endpoint] = {}
    defaults = {model.endpoint_id for model in registry.models.values() if model.default}
    for key, model in registry.models.items():
        if model.endpoint_id in endpoints:
            continue
        pack = registry.model_packs.get(key)
        hint = prices.get(model.endpoint_id)
        name, _, _ = model.description.partition(":")  # "FLUX.1 [schnell]: fast, ..." -> "FLUX.1 [schnell]"
        endpoints[model.endpoint_id] = Endpoint(
            id=model.endpoint_id,
            input_schema=_schema(model, "input"),
            output_schema=_schema(model, "output"),
            name=name.strip(),
            description=model.description,
            kind=model.category,
            unit_price=float(hint.unit_price) if hint else None,
            unit=hint.unit if hint else "request",
            highlighted=model.endpoint_id in defaults,
            tags=tuple(dict.fromkeys((model.category, model.tool, *([pack.name] if pack else ())))),
        )
    return endpoints


def _schema(model: Any, which: str) -> dict | None:
    # A pack's broken schema file must not take the sandbox down: that endpoint just takes any input.
    try:
        return model.input_schema() if which == "input" else model.output_schema()
    except Exception as exc:
        log.warning("fal sandbox: the %s schema of %s could not be read: %s", which, model.endpoint_id, exc)
        return None


@functools.lru_cache(maxsize=1)
def _installed() -> tuple[Endpoint, ...]:
    from fal_mcp.config import Settings
    from fal_mcp.plugins import load_plugins

    # Every installed pack, whatever FAL_MCP_PLUGINS says: a server may enable fewer.
    return tuple(from_registry(load_plugins(Settings.from_env({}))).values())


def installed() -> dict[str, Endpoint]:
    """The endpoints of every installed pack, by id (loaded once per process)."""
    return {endpoint.id: endpoint for endpoint in _installed()}


# --- fal's per-model OpenAPI document -------------------------------------------------------------

_REF = "#/components/schemas/"
_QUEUE_STATUS = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]},
        "request_id": {"type": "string"},
        "response_url": {"type": "string"},
        "status_url": {"type": "string"},
        "cancel_url": {"type": "string"},
        "queue_position": {"type": "integer"},
        "logs": {"type": "array", "items": {"type": "object"}},
        "metrics": {"type": "object"},
    },
    "required": ["status", "request_id"],
}


def _schema_name(endpoint_id: str) -> str:
    return "".join(part.title() for part in endpoint_id.replace("-", "/").replace(".", "/").split("/"))


def _published(schema: dict) -> dict:
    """A vendored schema as fal's OpenAPI shows it: no $schema key, and the defaults the vendoring lost.

    The vendored files come from fal's JS client, whose generator drops the defaults of enum and union
    fields and keeps them as `x-head-default`; fal's own document has them as `default`.
    """
    schema = {key: value for key, value in schema.items() if key != "$schema"}
    properties = {}
    for name, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, dict) and "x-head-default" in prop and "default" not in prop:
            prop = {**prop, "default": prop["x-head-default"]}
        properties[name] = prop
    if properties:
        schema["properties"] = properties
    return schema


def openapi_document(endpoint: Endpoint, queue_url: str) -> dict | None:
    """Shaped like fal's per-model queue OpenAPI document; None when the pack vendors no input schema."""
    if endpoint.input_schema is None:
        return None
    name = _schema_name(endpoint.id)
    output = _published(endpoint.output_schema) if endpoint.output_schema else {"type": "object"}
    request_path = f"/{endpoint.app}/requests/{{request_id}}"
    rid_param = [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    queue_status = {
        "200": {
            "description": "The request status.",
            "content": {"application/json": {"schema": {"$ref": _REF + "QueueStatus"}}},
        }
    }
    return {
        "openapi": "3.0.4",
        "info": {
            "title": f"Queue OpenAPI for {endpoint.id}",
            "version": "1.0.0",
            "description": endpoint.description,
            "x-fal-metadata": {"endpointId": endpoint.id, "category": endpoint.category},
        },
        "components": {
            "securitySchemes": {
                "apiKeyAuth": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "Fal Key",
                }
            },
            "schemas": {
                "QueueStatus": _QUEUE_STATUS,
                name + "Input": _published(endpoint.input_schema),
                name + "Output": output,
            },
        },
        "paths": {
            f"{request_path}/status": {
                "get": {
                    "parameters": [*rid_param, {"name": "logs", "in": "query", "schema": {"type": "number"}}],
                    "responses": queue_status,
                }
            },
            f"{request_path}/cancel": {
                "put": {
                    "parameters": rid_param,
                    "responses": {"200": {"description": "The request was cancelled."}},
                }
            },
            f"/{endpoint.id}": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": _REF + name + "Input"}}},
                    },
                    "responses": queue_status,
                }
            },
            request_path: {
                "get": {
                    "parameters": rid_param,
                    "responses": {
                        "200": {
                            "description": "Result of the request.",
                            "content": {"application/json": {"schema": {"$ref": _REF + name + "Output"}}},
                        }
                    },
                }
            },
        },
        "servers": [{"url": queue_url}],
        "security": [{"apiKeyAuth": []}],
    }
