"""What a call will cost, before it is submitted: units × fal's unit price, with the units read from
the very input sent to fal (how many images, how many megapixels, how many seconds).

Used by spending.py for every call that reaches fal (every tool's model calls, in the foreground or
as jobs): its limits, confirmations and receipts. Where the size of a call cannot be told, the
estimate fails and, with a limit set, the call is refused (fail closed). Where fal publishes no unit
price, fal's historical average price per call stands in, and the estimate says so.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .fal_keys import FalKey
    from .gateway import FalGateway

# fal's named image sizes (fal's portrait_4_3 is a 3:4 portrait).
IMAGE_SIZES = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
COUNT_FIELDS = ("num_images", "num_outputs", "num_videos", "num_samples")
SECOND_FIELDS = ("duration", "duration_seconds", "seconds_total", "audio_length", "length_seconds")
SCALE_FIELDS = ("upscale_factor", "scale")
# fal's unit names, singular, by the kind of quantity they count.
UNIT_KINDS = {
    "image": "count",
    "images": "count",
    "video": "count",
    "videos": "count",
    "request": "count",
    "requests": "count",
    "call": "count",
    "calls": "count",
    "generation": "count",
    "generations": "count",
    "megapixel": "megapixel",
    "megapixels": "megapixel",
    "mp": "megapixel",
    "second": "second",
    "seconds": "second",
    "sec": "second",
    "s": "second",
    "minute": "minute",
    "minutes": "minute",
}


class EstimateError(ValueError):
    """The call's cost cannot be told; the message says why."""


@dataclass(frozen=True)
class Estimate:
    endpoint_id: str
    units: float
    unit: str
    unit_price: float
    currency: str
    basis: str  # how the units were counted, e.g. "4 images of 1.05 megapixels"
    historical: bool = False  # no unit price published: fal's historical average per call

    @property
    def cost(self) -> float:
        return self.units * self.unit_price

    def describe(self) -> str:
        return (
            f"{self.units:g} {self.unit} × {self.unit_price:g} {self.currency} = {self.cost:.4f} "
            f"{self.currency} ({self.basis})"
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*s?\s*", value)  # fal takes "5" or "5s" for some models
        return float(match.group(1)) if match else None
    return None


def count_of(arguments: Mapping[str, Any]) -> int:
    for name in COUNT_FIELDS:
        value = _number(arguments.get(name))
        if value is not None and value >= 1:
            return int(value)
    return 1


def size_of(arguments: Mapping[str, Any]) -> tuple[int, int] | None:
    """The output size the input asks for, if it says."""
    size = arguments.get("image_size")
    if isinstance(size, str) and size in IMAGE_SIZES:
        return IMAGE_SIZES[size]
    if isinstance(size, Mapping):
        width, height = _number(size.get("width")), _number(size.get("height"))
        if width and height:
            return int(width), int(height)
    width, height = _number(arguments.get("width")), _number(arguments.get("height"))
    if width and height:
        return int(width), int(height)
    return None


def seconds_of(arguments: Mapping[str, Any]) -> float | None:
    for name in SECOND_FIELDS:
        value = _number(arguments.get(name))
        if value is not None:
            return value
    frames = _number(arguments.get("num_frames"))
    fps = _number(arguments.get("fps")) or _number(arguments.get("frames_per_second"))
    if frames and fps:
        return frames / fps
    return None


ImageSize = Callable[[str], Awaitable[tuple[int, int]]]


async def units_for(
    unit: str, arguments: Mapping[str, Any], image_size: ImageSize | None = None
) -> tuple[float, str]:
    """(units, how they were counted) for fal's `unit`, from the input sent to fal. `image_size(url)`
    reads an input image's size, for models priced by the megapixels of an image they are given."""
    kind = UNIT_KINDS.get(unit.strip().lower())
    count = count_of(arguments)
    if kind == "count":
        return float(count), f"{count} {unit}"
    if kind == "megapixel":
        size = size_of(arguments)
        scale = next((value for name in SCALE_FIELDS if (value := _number(arguments.get(name)))), 1.0)
        if size is None and image_size is not None and isinstance(arguments.get("image_url"), str):
            width, height = await image_size(arguments["image_url"])
            size = (round(width * scale), round(height * scale))
        if size is None:
            raise EstimateError(
                "it is priced per megapixel and the input gives no output size (image_size, or "
                "width and height)"
            )
        megapixels = size[0] * size[1] / 1_000_000
        return count * megapixels, f"{count} × {size[0]}x{size[1]} ({megapixels:.2f} megapixels each)"
    if kind in ("second", "minute"):
        seconds = seconds_of(arguments)
        if seconds is None:
            raise EstimateError(
                f"it is priced per {unit} and the input gives no length (one of "
                f"{', '.join(SECOND_FIELDS)}, or num_frames with fps)"
            )
        amount = seconds if kind == "second" else seconds / 60
        return count * amount, f"{count} × {seconds:g} s"
    raise EstimateError(f"fal prices it per {unit!r}, a unit this server cannot count from the input")


async def estimate(
    gateway: FalGateway, endpoint_id: str, arguments: Mapping[str, Any], key: FalKey | None = None
) -> Estimate:
    """units × fal's published unit price for this exact input, asked of fal with `key` (the call's fal
    key). EstimateError says what is missing; KeyRefused, that there is no key to ask with."""
    from .errors import ToolError
    from .fal_keys import KeyRefused

    try:
        answer = await gateway.platform(
            "GET",
            "/models/pricing",
            params=[("endpoint_id", endpoint_id)],
            ttl=gateway.settings.catalog_ttl,
            key=key,
        )
        price = next(p for p in answer.get("prices", []) if p.get("endpoint_id") == endpoint_id)
        unit_price, unit = float(price["unit_price"]), str(price["unit"])
    except StopIteration:
        return await _historical(gateway, endpoint_id, arguments, key)
    except KeyRefused:
        raise
    except (ToolError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EstimateError(f"its price could not be read from fal ({exc})") from None
    units, basis = await units_for(unit, arguments, gateway.image_size)
    return Estimate(endpoint_id, units, unit, unit_price, str(price.get("currency") or "USD"), basis)


async def _historical(
    gateway: FalGateway, endpoint_id: str, arguments: Mapping[str, Any], key: FalKey | None
) -> Estimate:
    """fal's historical average price per call, for an endpoint without a published unit price."""
    from .errors import ToolError
    from .fal_keys import KeyRefused

    calls = count_of(arguments)
    body = {"estimate_type": "historical_api_price", "endpoints": {endpoint_id: {"call_quantity": calls}}}
    try:
        answer = await gateway.platform("POST", "/models/pricing/estimate", json=body, key=key)
        total = float(answer["total_cost"])
    except KeyRefused:
        raise
    except (ToolError, KeyError, TypeError, ValueError) as exc:
        raise EstimateError(f"fal publishes no price for it, nor a historical one ({exc})") from None
    return Estimate(
        endpoint_id,
        float(calls),
        "call",
        total / calls,
        str(answer.get("currency") or "USD"),
        f"{calls} call(s) at fal's historical average price",
        historical=True,
    )
