"""Media coming in: the one path by which tools fetch, decode and upload files.

- `MediaUrl` types a tool field that takes a file: an http(s) URL, a data: URI,
  or a local path inside the allowed directories. The core turns the last two
  into fal storage URLs before the handler runs (see `resolve_media_inputs`).
- `fetch()` downloads for local work (compose, crop, pad) with a size limit,
  a timeout, only http(s), and no private or loopback addresses other than the
  configured fal hosts (so a URL cannot be used to reach the local network).
- `open_image()` decodes with a pixel limit, refusing decompression bombs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

from pydantic import Field

MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 64_000_000  # 8000 x 8000
FETCH_TIMEOUT = 30.0
MAX_REDIRECTS = 5
MAX_URL_LENGTH = 8192  # longer http(s) URLs are refused (servers refuse them anyway)


class _MediaInput:
    """Marks a field whose value the core resolves to a URL fal can fetch."""


MEDIA_INPUT = _MediaInput()
MediaUrl = Annotated[
    str,
    MEDIA_INPUT,
    Field(min_length=1, max_length=20_000_000,
          description="An https URL, a data: URI, or a local file path inside the allowed directories"),
]


class MediaError(ValueError):
    """A file could not be fetched or decoded; the message says why."""


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None


def decode_data_uri(uri: str, max_bytes: int = MAX_DOWNLOAD_BYTES) -> Fetched:
    header, comma, payload = uri.partition(",")
    if not comma or not header.startswith("data:"):
        raise MediaError("not a valid data: URI (expected data:<type>;base64,<data>)")
    meta = header[5:].split(";")
    content_type = meta[0] or "text/plain"
    try:
        data = base64.b64decode(payload, validate=True) if "base64" in meta[1:] else unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raise MediaError("the data: URI's base64 payload is malformed") from None
    if len(data) > max_bytes:
        raise MediaError(f"the data: URI holds {len(data)} bytes, more than the limit of {max_bytes}")
    return Fetched(data, content_type)


def _trusted_hosts(fal_urls) -> set[tuple[str, int | None]]:
    trusted = set()
    for url in fal_urls:
        parts = urlsplit(url)
        trusted.add((parts.hostname or "", parts.port))
    return trusted


def check_url_syntax(url: str) -> tuple[str, int | None]:
    """An http(s) URL must at least be well formed before it is fetched or passed on to fal:
    (host, port), or MediaError saying what is wrong with it."""
    from .errors import shown

    if len(url) > MAX_URL_LENGTH:
        raise MediaError(f"the URL is {len(url)} characters long, more than {MAX_URL_LENGTH}")
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        raise MediaError("the URL contains spaces or control characters (encode them as %20, ...)")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise MediaError(f"the URL {shown(url)} is malformed ({exc})") from None
    if not host:
        raise MediaError(f"the URL {shown(url)} has no host")
    netloc = parts.netloc.rpartition("@")[2]  # without user:password@
    name = netloc if netloc.startswith("[") else netloc.split(":", 1)[0]
    if not (name.startswith("[") or re.fullmatch(r"[\w.-]+", name)):
        raise MediaError(f"the URL {shown(url)} has an invalid host name")
    return host, port


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_url(url: str, trusted_urls=()) -> str | None:
    """Refuse a URL that is not http(s), is malformed, or whose host resolves to a non-public address
    (unless it is one of the configured fal hosts, such as a local sandbox). Returns the address to
    connect to, the one checked (None for a fal host): a second lookup could answer differently."""
    import anyio

    from .errors import shown

    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        raise MediaError(f"only http and https URLs can be fetched, not {scheme or 'a bare path'}:")
    host, port = check_url_syntax(url)
    if (host, port) in _trusted_hosts(trusted_urls):
        return None
    try:
        port = port or (443 if scheme == "https" else 80)
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise MediaError(f"the host {shown(host, 100)} could not be resolved") from None
    for info in infos:
        if not _is_public(info[4][0]):
            raise MediaError(f"the host {shown(host, 100)} resolves to a private, loopback or reserved "
                             f"address ({info[4][0]}); only public addresses can be fetched")
    return infos[0][4][0]


def pinned_request(url: str, address: str | None) -> dict:
    """Arguments for `http.stream("GET", **...)` that send the request for `url` to `address`, the
    address check_url approved, with the URL's own Host header and TLS server name."""
    if address is None:
        return {"url": url}
    import httpx

    target = httpx.URL(url)
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return {"url": target.copy_with(host=address), "headers": {"Host": target.netloc.decode("ascii")},
            "extensions": extensions}


async def fetch(url: str, *, trusted_urls=(), max_bytes: int = MAX_DOWNLOAD_BYTES,
                timeout: float = FETCH_TIMEOUT, http=None) -> Fetched:
    """Download `url` (or decode a data: URI) with the limits above; redirects are checked hop by hop.
    `http` is an httpx.AsyncClient to reuse (the gateway keeps one: making one costs milliseconds)."""
    import anyio
    import httpx

    if url.startswith("data:"):
        return decode_data_uri(url, max_bytes)
    try:
        with anyio.fail_after(timeout):
            async with contextlib.AsyncExitStack() as stack:
                if http is None:
                    http = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout))
                for _ in range(MAX_REDIRECTS + 1):
                    request = pinned_request(url, await check_url(url, trusted_urls))
                    async with http.stream("GET", **request, follow_redirects=False) as response:
                        if response.is_redirect:
                            url = urljoin(url, response.headers.get("location", ""))
                            continue
                        if response.status_code >= 400:
                            raise MediaError(f"downloading it failed with HTTP {response.status_code}")
                        declared = int(response.headers.get("content-length") or 0)
                        if declared > max_bytes:
                            raise MediaError(f"it is {declared} bytes, more than the limit of {max_bytes}")
                        chunks, size = [], 0
                        async for chunk in response.aiter_bytes():
                            size += len(chunk)
                            if size > max_bytes:
                                raise MediaError(f"it is more than the limit of {max_bytes} bytes")
                            chunks.append(chunk)
                        content_type = response.headers.get("content-type", "").split(";")[0] or None
                        return Fetched(b"".join(chunks), content_type)
                raise MediaError(f"more than {MAX_REDIRECTS} redirects")
    except TimeoutError:
        raise MediaError(f"downloading it took longer than {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise MediaError(f"downloading it failed ({type(exc).__name__})") from None


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Any:
    """Decode an image with PIL, refusing anything over `max_pixels` before decoding it."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # PIL's own, far higher limit, checked on opening
        raise MediaError(f"it has more pixels than the limit of {max_pixels} ({exc})") from None
    except (UnidentifiedImageError, OSError):
        raise MediaError("it is not an image PIL can read") from None
    width, height = image.size
    if width * height > max_pixels:
        raise MediaError(f"it is {width}x{height} pixels, more than the limit of {max_pixels}")
    try:
        image.load()
    except (OSError, Image.DecompressionBombError) as exc:
        raise MediaError(f"it could not be decoded ({exc})") from None
    return image


# -- local files and data: URIs become fal storage URLs ---------------------------------


def media_fields(model_class) -> dict[str, bool]:
    """Names of a model's MediaUrl fields, each with whether it holds a list of them."""
    from typing import get_args, get_origin

    def is_media(annotation) -> bool:
        return MEDIA_INPUT in getattr(annotation, "__metadata__", ())

    found = {}
    for name, info in model_class.model_fields.items():
        if MEDIA_INPUT in info.metadata:
            found[name] = False
            continue
        stack = [info.annotation]
        while stack:
            annotation = stack.pop()
            if is_media(annotation):
                found[name] = get_origin(info.annotation) in (list, tuple) or found.get(name, False)
                break
            if get_origin(annotation) in (list, tuple):
                if any(is_media(arg) for arg in get_args(annotation)):
                    found[name] = True
                    break
            stack.extend(get_args(annotation))
    return found


def is_remote(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def local_file(text: str, allowed_dirs: list[str], allow_hidden: bool, max_bytes: int):
    """The checked path of a local file a tool may read; MediaError says why not."""
    import os
    from pathlib import Path

    from .errors import shown

    if "\x00" in text:
        raise MediaError("the path contains a NUL byte")
    if "://" in text or text.startswith(("file:", "ftp:", "gopher:")):
        raise MediaError("only http(s) URLs, data: URIs and local paths are accepted")
    roots = [Path(os.path.realpath(d)) for d in allowed_dirs]
    given = shown(text, 200)
    allowed = ", ".join(str(r) for r in roots)
    try:
        candidate = Path(os.path.expanduser(text))
        if not candidate.is_absolute():
            candidate = roots[0] / candidate if roots else candidate
        resolved = Path(os.path.realpath(candidate))  # follows symlinks and '..'
        root = next((r for r in roots if resolved == r or r in resolved.parents), None)
        if root is None:
            raise MediaError(f"{given} is outside the allowed directories ({allowed}); set "
                             "FAL_MCP_ALLOWED_DIRS or open the file's folder as a root in your client")
        inside = resolved.relative_to(root).parts
        lexical = candidate.parts
        hidden = any(part.startswith(".") and part not in (".", "..") for part in (*inside, *lexical))
        if hidden and not allow_hidden:
            raise MediaError(f"{given} is or is inside a hidden file or directory; those are refused "
                             "(set FAL_MCP_ALLOW_HIDDEN=1 to allow them)")
        if not resolved.is_file():
            raise MediaError(f"{given} is not a file")
        size = resolved.stat().st_size
    except OSError as exc:  # a name too long, a loop of symlinks, no permission...
        raise MediaError(f"{given} cannot be read ({exc.strerror or type(exc).__name__})") from None
    if size > max_bytes:
        raise MediaError(f"{given} is {size} bytes, more than the limit of {max_bytes} "
                         "(FAL_MCP_MAX_UPLOAD_MB)")
    return resolved


async def to_fal_url(value: str, *, gateway, allowed_dirs: list[str]) -> str:
    """A data: URI or an allowed local file, uploaded to fal storage once per content."""
    import mimetypes

    import anyio

    settings = gateway.settings
    if value.startswith("data:"):
        fetched = decode_data_uri(value, settings.max_upload_bytes)
        extension = mimetypes.guess_extension(fetched.content_type or "") or ".bin"
        return await gateway.upload_once(fetched.data, fetched.content_type or "application/octet-stream",
                                         f"upload{extension}")
    path = local_file(value, allowed_dirs, settings.allow_hidden, settings.max_upload_bytes)
    data = await anyio.Path(path).read_bytes()
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return await gateway.upload_once(data, content_type, path.name)
