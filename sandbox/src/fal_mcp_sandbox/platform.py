"""fal's platform API (api.fal.ai/v1): model search, pricing, estimates, usage.

The catalogue is the endpoints the sandbox serves (the installed packs' models), the prices their
packs' price hints. Errors use the platform's shape: {"error": {"type": ..., "message": ...}}.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse

from . import endpoints
from .state import SandboxState

PAGE_DEFAULT, PAGE_MAX = 20, 100
TIMEFRAMES = ("minute", "hour", "day", "week", "month")
UPDATED_AT = "2025-11-01T00:00:00Z"  # of every model: the sandbox has no history


class PlatformError(Exception):
    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status, self.type = status, type_

    def response(self) -> JSONResponse:
        return error(self.status, self.type, str(self))


def error(status: int, type_: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status)


def _invalid(message: str) -> PlatformError:
    return PlatformError(400, "validation_error", message)


def _expand(request: Request) -> set[str]:
    return {part.strip() for value in request.query_params.getlist("expand") for part in value.split(",")}


# Cursors are opaque to clients; inside they are just an offset.
def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def _offset(cursor: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = int(data["offset"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _invalid("Invalid cursor") from None
    if offset < 0:
        raise _invalid("Invalid cursor")
    return offset


def _model(m: endpoints.Endpoint, base_url: str, with_openapi: bool) -> dict:
    item = {
        "endpoint_id": m.id,
        "metadata": {
            "display_name": m.display_name,
            "category": m.category,
            "description": m.description,
            "status": "active",
            "tags": list(m.tags),
            "updated_at": UPDATED_AT,
            "thumbnail_url": f"{base_url}/cdn/thumbnails/{m.id}.jpg",
            "model_url": f"{base_url}/run/{m.id}",
            "highlighted": m.highlighted,
            "pinned": False,
            "kind": "inference",
        },
    }
    document = endpoints.openapi_document(m, f"{base_url}/queue") if with_openapi else None
    if document is not None:  # like fal, no document for an endpoint without a published schema
        item["openapi"] = document
    return item


def models(state: SandboxState, request: Request) -> JSONResponse:
    q = request.query_params
    try:
        limit = int(q.get("limit", PAGE_DEFAULT))
    except ValueError:
        raise _invalid("limit must be an integer") from None
    if not 1 <= limit <= PAGE_MAX:
        raise _invalid(f"limit must be between 1 and {PAGE_MAX}")
    offset = _offset(q["cursor"]) if q.get("cursor") else 0
    rows = list(state.endpoints.values())
    if ids := q.getlist("endpoint_id"):
        rows = [m for m in rows if m.id in ids]
    if category := q.get("category"):
        rows = [m for m in rows if m.category == category]
    if q.get("status", "active") != "active":  # every endpoint a pack registers is active
        rows = []
    if terms := (q.get("q") or "").lower().split():

        def haystack(m: endpoints.Endpoint) -> str:
            return " ".join((m.id, m.display_name, m.description, m.category, *m.tags)).lower()

        rows = [m for m in rows if all(term in haystack(m) for term in terms)]
    page = rows[offset : offset + limit]
    has_more = offset + limit < len(rows)
    with_openapi = "openapi-3.0" in _expand(request)
    return JSONResponse(
        {
            "models": [_model(m, state.base_url, with_openapi) for m in page],
            "next_cursor": _cursor(offset + limit) if has_more else None,
            "has_more": has_more,
        }
    )


def pricing(state: SandboxState, request: Request) -> JSONResponse:
    ids = list(dict.fromkeys(request.query_params.getlist("endpoint_id")))
    if not 1 <= len(ids) <= 50:
        raise _invalid("endpoint_id must be given between 1 and 50 times")
    prices = [
        {"endpoint_id": m.id, "unit_price": m.unit_price, "unit": m.unit, "currency": "USD"}
        for m in map(state.endpoints.get, ids)
        if m is not None and m.unit_price is not None  # unknown or unpriced ids are left out
    ]
    return JSONResponse({"prices": prices, "next_cursor": None, "has_more": False})


def estimate(state: SandboxState, body: object) -> JSONResponse:
    if not isinstance(body, dict):
        raise _invalid("Body must be a JSON object")
    kind = body.get("estimate_type")
    quantity_key = {"historical_api_price": "call_quantity", "unit_price": "unit_quantity"}.get(kind)
    if quantity_key is None:
        raise _invalid("estimate_type must be 'historical_api_price' or 'unit_price'")
    endpoints = body.get("endpoints")
    if not isinstance(endpoints, dict) or not endpoints:
        raise _invalid("endpoints must be a non-empty object keyed by endpoint id")
    total = 0.0
    for endpoint_id, spec in endpoints.items():
        model = state.endpoints.get(endpoint_id)
        if model is None or model.unit_price is None:
            raise PlatformError(404, "not_found", f"Endpoint '{endpoint_id}' not found")
        quantity = spec.get(quantity_key) if isinstance(spec, dict) else None
        if isinstance(quantity, bool) or not isinstance(quantity, (int, float)) or quantity < 0:
            raise _invalid(f"endpoints.{endpoint_id}.{quantity_key} must be a non-negative number")
        units = quantity * model.typical_units if quantity_key == "call_quantity" else quantity
        total += units * model.unit_price
    return JSONResponse({"estimate_type": kind, "total_cost": round(total, 6), "currency": "USD"})


def _parse_time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(f"{name} must be an ISO 8601 date or datetime") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _bucket(moment: datetime, timeframe: str) -> datetime:
    moment = moment.replace(second=0, microsecond=0)
    if timeframe == "minute":
        return moment
    moment = moment.replace(minute=0)
    if timeframe == "hour":
        return moment
    moment = moment.replace(hour=0)
    if timeframe == "week":
        return moment - timedelta(days=moment.weekday())
    return moment.replace(day=1) if timeframe == "month" else moment


def usage(state: SandboxState, request: Request) -> JSONResponse:
    if state.config.usage_forbidden:
        raise PlatformError(403, "authorization_error", "Usage data requires an admin API key")
    q = request.query_params
    start, end = _parse_time(q.get("start"), "start"), _parse_time(q.get("end"), "end")
    timeframe = q.get("timeframe") or "day"
    if timeframe not in TIMEFRAMES:
        raise _invalid(f"timeframe must be one of {', '.join(TIMEFRAMES)}")
    ids = set(q.getlist("endpoint_id"))
    with state.lock:
        jobs = [j for j in state.jobs.values() if j.finished and j.error is None]
    series: dict[datetime, dict[str, float]] = {}
    totals: dict[str, float] = {}
    for job in sorted(jobs, key=lambda j: j.completed_at):
        moment = datetime.fromtimestamp(job.completed_at, timezone.utc)
        if (start and moment < start) or (end and moment >= end) or (ids and job.endpoint_id not in ids):
            continue
        bucket = series.setdefault(_bucket(moment, timeframe), {})
        bucket[job.endpoint_id] = bucket.get(job.endpoint_id, 0) + job.usage
        totals[job.endpoint_id] = totals.get(job.endpoint_id, 0) + job.usage

    def items(quantities: dict[str, float]) -> list[dict]:
        rows = []
        for endpoint_id, quantity in quantities.items():
            model = state.endpoints.get(endpoint_id) or endpoints.Endpoint(endpoint_id)
            rows.append(
                {
                    "endpoint_id": endpoint_id,
                    "unit": model.unit,
                    "quantity": round(quantity, 6),
                    "unit_price": model.unit_price or 0.0,
                }
            )
        return rows

    body: dict = {
        "time_series": [{"bucket": b.isoformat(), "results": items(series[b])} for b in sorted(series)],
        "next_cursor": None,
        "has_more": False,
    }
    if "summary" in _expand(request):
        body["summary"] = items(totals)
    return JSONResponse(body)
