"""Media coming in: the one path by which tools fetch, decode and upload files.

- `MediaUrl` types a tool field that takes a file: an http(s) URL, a data: URI,
  or a local path inside the allowed directories. The core turns the last two
  into fal storage URLs before the handler runs (ToolTable._resolve_media, `to_fal_url`).
- `LocalMediaUrl` types such a field of a tool that works on the file itself (with Pillow, say)
  and sends it to no fal endpoint: the core only checks its syntax and leaves it as given; the
  handler reads it with `ToolContext.read_media` / `read_image` (`read_input`: the same reading,
  the same checks as an upload), and nothing is uploaded. Where the arguments decide (a mode that
  calls fal), the input model's `sends_to_fal(field)` says so and the core resolves it as a
  MediaUrl (`read_here`).
- `download()` is the one downloader (previews, local work, saved outputs): a size
  limit, a timeout, only http(s), and no private or loopback addresses other than
  the configured fal hosts, checked at every redirect (so a URL cannot be used to
  reach the local network). `fetch()` keeps the file in memory.
- `open_image()` decodes with a pixel limit, refusing decompression bombs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

from pydantic import Field

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from .config import Settings
    from .fal_keys import FalKey
    from .gateway import FalGateway
    from .uploads import OpenFile

MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 64_000_000  # 8000 x 8000
FETCH_TIMEOUT = 30.0
MAX_REDIRECTS = 5
MAX_URL_LENGTH = 8192  # longer http(s) URLs are refused (servers refuse them anyway)
# The formats decoded here: what generative models take and give. Not ICO/ICNS (their real size is
# known only after decoding), not EPS/PDF (handed to Ghostscript), not the long tail of PIL's plugins.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


class _MediaInput:
    """Marks a field whose value the core resolves to a URL fal can fetch."""


class _LocalMediaInput(_MediaInput):
    """Marks a file field the tool reads itself and sends to no fal endpoint: the core checks its syntax
    and leaves it as given (never uploaded); the handler reads it with ToolContext.read_media. Unless
    the input model's `sends_to_fal(field)` says this call sends it after all (see `read_here`)."""


MEDIA_INPUT = _MediaInput()
LOCAL_MEDIA_INPUT = _LocalMediaInput()


def _media_field() -> Any:
    # What a media input takes is said once, in the server's instructions.
    return Field(min_length=1, max_length=20_000_000)


MediaUrl = Annotated[str, MEDIA_INPUT, _media_field()]
LocalMediaUrl = Annotated[str, LOCAL_MEDIA_INPUT, _media_field()]


class MediaError(ValueError):
    """A file could not be fetched or decoded; the message says why."""


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None
    name: str | None = None  # a local file's name


def _data_uri_parts(uri: str) -> tuple[list[str], str]:
    """(the header's parts after data:, the payload), or MediaError if `uri` is no data: URI."""
    header, comma, payload = uri.partition(",")
    if not comma or not header.startswith("data:"):
        raise MediaError("not a valid data: URI (expected data:<type>;base64,<data>)")
    return header[5:].split(";"), payload


def decode_data_uri(uri: str, max_bytes: int = MAX_DOWNLOAD_BYTES) -> Fetched:
    meta, payload = _data_uri_parts(uri)
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
            raise MediaError(
                f"the host {shown(host, 100)} resolves to a private, loopback or reserved "
                f"address ({info[4][0]}); only public addresses can be fetched"
            )
    return infos[0][4][0]


def pinned_request(url: str, address: str | None) -> dict:
    """Arguments for `http.stream("GET", **...)` that send the request for `url` to `address`, the
    address check_url approved, with the URL's own Host header and TLS server name."""
    if address is None:
        return {"url": url}
    import httpx

    target = httpx.URL(url)
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return {
        "url": target.copy_with(host=address),
        "headers": {"Host": target.netloc.decode("ascii")},
        "extensions": extensions,
    }


async def download(
    url: str,
    write: Callable[[bytes], Awaitable[Any]],
    *,
    trusted_urls=(),
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    timeout: float = FETCH_TIMEOUT,
    http=None,
) -> str | None:
    """The one downloader, with the one redirect policy: every hop is checked by check_url and sent to
    the address it approved, at most MAX_REDIRECTS of them; at most `max_bytes` are read, all within
    `timeout` seconds. Hands each chunk of the body to `write` and returns the content type; every
    failure is a MediaError. `http` is an httpx.AsyncClient to reuse (the gateway keeps one: making one
    costs milliseconds).

    A callback rather than a generator of chunks: the caller's awaits (writing a file) then run inside
    the timeout's cancel scope, which a cancel scope held across a generator's yield cannot promise."""
    import anyio
    import httpx

    try:
        with anyio.fail_after(timeout):
            async with contextlib.AsyncExitStack() as stack:
                if http is None:
                    http = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout))
                for _ in range(MAX_REDIRECTS + 1):
                    request = pinned_request(url, await check_url(url, trusted_urls))
                    async with contextlib.AsyncExitStack() as hop:
                        response = await _sent(hop, http, request)
                        if response.is_redirect:
                            url = urljoin(url, response.headers.get("location", ""))
                            continue
                        if response.status_code >= 300:  # an error, or a redirect without a Location
                            raise MediaError(f"downloading it failed with HTTP {response.status_code}")
                        declared = int(response.headers.get("content-length") or 0)
                        if declared > max_bytes:
                            raise MediaError(f"it is {declared} bytes, more than the limit of {max_bytes}")
                        size = 0
                        async for chunk in response.aiter_bytes():
                            size += len(chunk)
                            if size > max_bytes:
                                raise MediaError(f"it is more than the limit of {max_bytes} bytes")
                            await write(chunk)
                        return response.headers.get("content-type", "").split(";")[0] or None
                raise MediaError(f"more than {MAX_REDIRECTS} redirects")
    except TimeoutError:
        raise MediaError(f"downloading it took longer than {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise MediaError(f"downloading it failed ({type(exc).__name__})") from None


async def _sent(stack: contextlib.AsyncExitStack, http, request: dict) -> Any:
    """The response to a GET (its body still to read, closed with `stack`), sent a second time if the
    first found its kept-alive connection closed by the server before any answer came: a race with the
    server's idle timeout, which nothing but a new connection cures (a GET: repeating it changes nothing)."""
    import httpx

    try:
        return await stack.enter_async_context(http.stream("GET", **request, follow_redirects=False))
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return await stack.enter_async_context(http.stream("GET", **request, follow_redirects=False))


async def fetch(
    url: str,
    *,
    trusted_urls=(),
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    timeout: float = FETCH_TIMEOUT,
    http=None,
) -> Fetched:
    """Download `url` into memory (or decode a data: URI), by download()'s policy."""
    if url.startswith("data:"):
        return decode_data_uri(url, max_bytes)
    chunks: list[bytes] = []

    async def keep(chunk: bytes) -> None:
        chunks.append(chunk)

    content_type = await download(
        url, keep, trusted_urls=trusted_urls, max_bytes=max_bytes, timeout=timeout, http=http
    )
    return Fetched(b"".join(chunks), content_type)


def _reason(exc: BaseException) -> str:
    """A decoder's complaint, short enough to quote in an error."""
    text = " ".join(str(exc).split())
    return (text[:150] + "...") if len(text) > 150 else (text or type(exc).__name__)


def open_image(
    data: bytes,
    max_pixels: int = MAX_PIXELS,
    *,
    draft: Callable[[PILImage], tuple[int, int] | None] | None = None,
) -> PILImage:
    """Decode an image with PIL, refusing anything over `max_pixels` before decoding it.

    Blocking: run it in a worker thread. The first frame (of an animation too: the others are never
    decoded) is loaded completely here, so later work on the result cannot meet bad data. Every
    failure is a MediaError with a short reason: PIL's decoders raise OSError, SyntaxError,
    ValueError, EOFError, struct.error, IndexError... on bad data, with no common base class.

    `draft`: for a caller that needs the image smaller only (a preview), given the opened image (its
    full size, nothing decoded yet), the least size wanted, or None for all of it. A JPEG is then
    decoded at the smallest of 1/8, 1/4, 1/2 its scale still at least that large (`Image.draft`: the
    decoder scales in its inverse DCT, several times faster); the whole file is read and checked all the
    same (a truncated file fails as it does decoded in full). Other formats are decoded in full."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:  # PIL's own, far higher limit, checked on opening
        raise MediaError(f"it has more pixels than the limit of {max_pixels} ({exc})") from None
    except UnidentifiedImageError:
        raise MediaError(
            f"it is not an image PIL can read (formats read here: {', '.join(IMAGE_FORMATS)})"
        ) from None
    except Exception as exc:  # a format PIL recognised whose header it could not parse
        raise MediaError(f"it is not an image PIL can read ({_reason(exc)})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise MediaError(f"it is {width}x{height} pixels, more than the limit of {max_pixels}")
    try:
        wanted = draft(image) if draft is not None and image.format == "JPEG" else None
        if wanted is not None and (wanted[0] < width or wanted[1] < height):
            image.draft(None, (max(1, wanted[0]), max(1, wanted[1])))
        image.load()
    except Exception as exc:
        raise MediaError(f"it could not be decoded ({_reason(exc)})") from None
    width, height = image.size  # a few formats (ICO, ICNS) learn their real size only on loading
    if width * height > max_pixels:
        raise MediaError(f"it is {width}x{height} pixels, more than the limit of {max_pixels}")
    return image


# -- local files and data: URIs become fal storage URLs, or are read here ------------------------


def _markers(metadata) -> list[_MediaInput]:
    return [item for item in metadata if isinstance(item, _MediaInput)]


def media_fields(model_class) -> dict[str, bool]:
    """Names of a model's MediaUrl and LocalMediaUrl fields, each with whether it holds a list of them."""
    from typing import get_args, get_origin

    def is_media(annotation) -> bool:
        return bool(_markers(getattr(annotation, "__metadata__", ())))

    found = {}
    for name, info in model_class.model_fields.items():
        if _markers(info.metadata):
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


def local_media_fields(model_class) -> set[str]:
    """Names of a model's LocalMediaUrl fields (in lists or optional too): read by the tool, never uploaded."""
    from typing import get_args

    found = set()
    for name, info in model_class.model_fields.items():
        stack, metadata = [info.annotation], list(info.metadata)
        while stack:
            annotation = stack.pop()
            metadata += getattr(annotation, "__metadata__", ())
            stack.extend(get_args(annotation))
        if any(isinstance(marker, _LocalMediaInput) for marker in _markers(metadata)):
            found.add(name)
    return found


def read_here(args) -> set[str]:
    """The LocalMediaUrl fields of `args` (a tool's validated arguments) that its tool reads itself in
    this call, which the core leaves as given: all of them but those the input model's optional
    `sends_to_fal(field) -> bool` says go to a fal endpoint this time (resize_image's extend mode),
    which the core resolves as it does a MediaUrl's, before the call is recorded as a job."""
    sends = getattr(args, "sends_to_fal", None)
    return {name for name in local_media_fields(type(args)) if not (sends is not None and sends(name))}


def is_remote(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _check_path_syntax(text: str) -> None:
    """A value that is neither an http(s) URL nor a data: URI must at least be a path."""
    if "\x00" in text:
        raise MediaError("the path contains a NUL byte")
    if "://" in text or text.startswith(("file:", "ftp:", "gopher:")):
        raise MediaError("only http(s) URLs, data: URIs and local paths are accepted")


def check_media_syntax(value: str) -> None:
    """What the core checks of a LocalMediaUrl value before the handler runs, without reading anything:
    a well-formed http(s) URL, a data: URI with its header, or something that can be a local path.
    MediaError says what is wrong."""
    if is_remote(value):
        check_url_syntax(value)
    elif value.startswith("data:"):
        _data_uri_parts(value)
    else:
        _check_path_syntax(value)


# Never read, whatever the allowed directories: the kernel's views of processes and devices
# (their files claim a size of 0 and can hold the server's own environment, keys included).
SYSTEM_TREES = ("/proc", "/sys", "/dev")
# Never allowed implicitly (as the working directory): a server started in one of these (Claude
# Desktop starts stdio servers in /) would otherwise open the whole machine or the user's home.
_BROAD_DIRS = (
    "/",
    "/bin",
    "/boot",
    "/etc",
    "/lib",
    "/lib64",
    "/opt",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/tmp",
    "/usr",
    "/var",
    "/home",
    "/Users",
    *SYSTEM_TREES,
)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def is_broad(directory: str) -> bool:
    """A directory too wide to allow without the operator saying so: /, a system tree, a home."""
    import os

    real = os.path.realpath(directory)
    home = os.path.realpath(os.path.expanduser("~"))
    return real in _BROAD_DIRS or real == home or any(_inside(real, tree) for tree in SYSTEM_TREES)


def operator_dirs(settings: Settings) -> list[str]:
    """What the operator allows: FAL_MCP_ALLOWED_DIRS, else the working directory unless it is
    too broad (then no local files at all until the operator names a directory)."""
    import os

    if settings.allowed_dirs:
        return list(settings.allowed_dirs)
    cwd = os.path.realpath(os.getcwd())
    return [] if is_broad(cwd) else [cwd]


def narrow(client_roots: list[str] | None, allowed: list[str]) -> list[str]:
    """The client's roots can only narrow what the operator allows: each root inside an allowed
    directory is kept; an allowed directory inside a root is kept; the rest gives nothing."""
    import os

    if not client_roots:
        return allowed
    kept: list[str] = []
    for root in (os.path.realpath(r) for r in client_roots):
        for directory in allowed:
            choice = root if _inside(root, directory) else directory if _inside(directory, root) else None
            if choice is not None and choice not in kept:
                kept.append(choice)
    return kept


@dataclass(frozen=True)
class LocalFile:
    name: str
    data: bytes


def read_local_file(text: str, allowed_dirs: list[str], allow_hidden: bool, max_bytes: int) -> LocalFile:
    """Read a local file a tool may read (open_local_file's checks), or raise MediaError saying why not.
    Blocking: run it in a worker thread. At most `max_bytes` are read from the descriptor (a file's
    claimed size is not trusted)."""
    import os

    opened = open_local_file(text, allowed_dirs, allow_hidden, max_bytes)
    given = _shown_path(text)
    try:
        chunks, size = [], 0
        while size <= max_bytes:  # the limit holds on what is read, whatever size the file claims
            chunk = os.read(opened.descriptor, min(1024 * 1024, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except BlockingIOError:
        raise MediaError(f"{given} cannot be read now (it would block)") from None
    finally:
        opened.close()
    if len(data) > max_bytes:
        raise MediaError(f"{given} is more than the limit of {max_bytes} bytes (FAL_MCP_MAX_UPLOAD_MB)")
    return LocalFile(opened.name, data)


def _shown_path(text: str) -> str:
    from .errors import shown

    return shown(text, 200)


def open_local_file(text: str, allowed_dirs: list[str], allow_hidden: bool, max_bytes: int) -> OpenFile:
    """Open a local file a tool may read, or raise MediaError saying why not: an `uploads.OpenFile` (its
    descriptor, its size, its name), which the caller closes. Blocking: run it in a worker thread.

    The path is resolved and checked, then opened one component at a time from / without following
    any symbolic link, so a link swapped in after the check makes the open fail instead of escaping;
    the opened file must be a regular file of at most `max_bytes` bytes."""
    import os
    import stat
    from pathlib import Path

    from .errors import shown
    from .uploads import OpenFile

    _check_path_syntax(text)
    roots = [os.path.realpath(d) for d in allowed_dirs]
    given = _shown_path(text)
    if not roots:
        raise MediaError(
            f"{given}: no local files may be read here (the server's working directory is too "
            "broad to allow, or your client's roots lie outside the directories the operator "
            "allows); set FAL_MCP_ALLOWED_DIRS to the folders tools may read"
        )
    where = ""  # for a relative path: where it was looked for, said in every refusal
    try:
        candidate = Path(os.path.expanduser(text))
        if not candidate.is_absolute():
            candidate = Path(roots[0]) / candidate
            where = (
                f" (a relative path: resolved against {roots[0]}, the first of the allowed directories"
                f"{' (' + ', '.join(roots) + ')' if len(roots) > 1 else ''}, as {shown(str(candidate), 300)})"
            )
        resolved = os.path.realpath(candidate)  # follows symlinks and '..', for the check
        named = os.path.normpath(candidate)
        if any(_inside(path, tree) for path in (resolved, named) for tree in SYSTEM_TREES):
            raise MediaError(f"{given} is a system file ({', '.join(SYSTEM_TREES)} are never read)")
        root = next((r for r in roots if _inside(resolved, r)), None)
        if root is None:
            raise MediaError(
                f"{given} is outside the allowed directories ({', '.join(roots)}); set "
                "FAL_MCP_ALLOWED_DIRS or open the file's folder as a root in your client"
            )
        inside = Path(resolved).relative_to(root).parts
        hidden = any(part.startswith(".") and part not in (".", "..") for part in (*inside, *candidate.parts))
        if hidden and not allow_hidden:
            raise MediaError(
                f"{given} is or is inside a hidden file or directory; those are refused "
                "(set FAL_MCP_ALLOW_HIDDEN=1 to allow them)"
            )
        descriptor = _open_no_follow(resolved)
    except MediaError as exc:
        raise MediaError((str(exc) if str(exc).startswith(given) else f"{given}: {exc}") + where) from None
    except FileNotFoundError:
        raise MediaError(f"{given} is not a file (nothing exists at that path){where}") from None
    except OSError as exc:  # a name too long, a loop of symlinks, no permission...
        raise MediaError(f"{given} cannot be read ({exc.strerror or type(exc).__name__}){where}") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise MediaError(
                f"{given} is not a file (only regular files are read: no directories, "
                f"devices, FIFOs or sockets){where}"
            )
        if info.st_size > max_bytes:
            raise MediaError(
                f"{given} is {info.st_size} bytes, more than the limit of {max_bytes} (FAL_MCP_MAX_UPLOAD_MB)"
            )
    except BaseException:
        os.close(descriptor)
        raise
    return OpenFile(Path(resolved).name, descriptor, info.st_size)


def _open_no_follow(path: str) -> int:
    """A descriptor for `path` (absolute, already resolved), opened from / one component at a time
    with O_NOFOLLOW: if any component became a symbolic link since the check, this fails (ELOOP or
    ENOTDIR). O_NONBLOCK: a FIFO must not hang the open (it is refused as not a regular file)."""
    import errno
    import os

    nofollow = getattr(os, "O_NOFOLLOW", 0)
    final_flags = os.O_RDONLY | nofollow | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if os.open not in os.supports_dir_fd or not nofollow:  # not POSIX: best effort
        return os.open(path, final_flags)
    parts = [part for part in path.split("/") if part] or ["."]  # "/" itself: refused later, not a file
    directory_flags = os.O_RDONLY | os.O_DIRECTORY | nofollow | getattr(os, "O_CLOEXEC", 0)
    current = os.open("/", directory_flags)
    try:
        for part in parts[:-1]:
            following = os.open(part, directory_flags, dir_fd=current)
            os.close(current)
            current = following
        return os.open(parts[-1], final_flags, dir_fd=current)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise MediaError(
                "it is not a file that can be opened safely (a symbolic link in its path loops, "
                "or appeared after the path was checked)"
            ) from None
        raise
    finally:
        os.close(current)


async def read_input(value: str, *, settings: Settings, allowed_dirs: list[str]) -> Fetched:
    """A data: URI decoded, or an allowed local file read (read_local_file, in a worker thread), with the
    same limit (FAL_MCP_MAX_UPLOAD_MB) whether it is then uploaded or worked on here. MediaError says why
    not, naming the path (a data: URI's errors say "data: URI")."""
    import mimetypes

    import anyio

    if value.startswith("data:"):
        if len(value) > 1024 * 1024:  # base64 of megabytes: off the event loop
            fetched = await anyio.to_thread.run_sync(decode_data_uri, value, settings.max_upload_bytes)
        else:
            fetched = decode_data_uri(value, settings.max_upload_bytes)
        extension = mimetypes.guess_extension(fetched.content_type or "") or ".bin"
        return Fetched(fetched.data, fetched.content_type, f"upload{extension}")
    local = await anyio.to_thread.run_sync(
        read_local_file, value, allowed_dirs, settings.allow_hidden, settings.max_upload_bytes
    )
    return Fetched(local.data, mimetypes.guess_type(local.name)[0], local.name)


async def to_fal_url(
    value: str, *, gateway: FalGateway, allowed_dirs: list[str], key: FalKey | None = None
) -> str:
    """A data: URI or an allowed local file, uploaded to fal storage (with `key`, the call's fal key)
    once per content and key. A local file is streamed from disk (uploads.py), never read whole."""
    import mimetypes

    import anyio

    if value.startswith("data:"):
        fetched = await read_input(value, settings=gateway.settings, allowed_dirs=allowed_dirs)
        return await gateway.upload_once(
            fetched.data, fetched.content_type or "application/octet-stream", fetched.name, key=key
        )
    settings = gateway.settings
    opened = await anyio.to_thread.run_sync(
        open_local_file, value, allowed_dirs, settings.allow_hidden, settings.max_upload_bytes
    )
    try:
        content_type = mimetypes.guess_type(opened.name)[0] or "application/octet-stream"
        return await gateway.upload_file_once(opened, content_type, key=key)
    finally:
        opened.close()
