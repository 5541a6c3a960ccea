"""Small JSON documents fetched from a configured URL: an authorization server's metadata and keys,
fal's webhook keys. Bounded in size and time, never redirected."""

from __future__ import annotations

from typing import Any


async def get_json(url: str, *, timeout: float, limit: int) -> dict[str, Any]:
    """The JSON object at `url` (at most `limit` bytes). Raises OSError (unreachable) or ValueError
    (not 200, too large, not a JSON object)."""
    import json

    import httpx

    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
            async with http.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    raise ValueError(f"HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > limit:
                        raise ValueError("document too large")
    except httpx.HTTPError as error:
        raise OSError(f"{type(error).__name__}: {error}") from None
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document
