"""Attacks: reading files outside the allowed directories, reaching the local network through the
server (SSRF), decompression bombs, DNS rebinding and stolen sessions over HTTP, and the fal key
leaking anywhere a client or a log can see it.

Each attack is tried through every tool field it can reach. A canary HTTP server on 127.0.0.1
records every request it gets: an SSRF that got through would show there, whatever the message said.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from fal_mcp.delivery import deliver, make_preview, save
from fal_mcp.media import MediaError, fetch
from fal_mcp.outputs import GenerationOutput, OutputFile

from .conftest import INITIALIZE, http_server, server_env, tool_table_for
from .test_bad_input import base_arguments, schemas

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")]
TOKEN = "attack-suite-token-0123456789abcdef"


def png_bytes(size=(40, 30), color=(20, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


# -- a local HTTP server that records what reaches it ------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    """/redirect?to=URL: 302 there; /hop?n=N: N redirects, then a PNG; /big: declares 60 MB;
    /chunked?mb=N: N MB without a length; anything else: a small PNG. Every request is recorded."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.hits.append(self.path)
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        if url.path == "/redirect":
            self._answer(302, b"", {"Location": query["to"]})
        elif url.path == "/hop" and int(query["n"]) > 0:
            self._answer(302, b"", {"Location": f"/hop?n={int(query['n']) - 1}"})
        elif url.path == "/big":
            self._answer(200, b"", {"Content-Length": str(60 * 1024 * 1024)}, length=False)
        elif url.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(int(query["mb"]) * 16):
                self.wfile.write(b"10000\r\n" + b"\0" * 65536 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._answer(200, png_bytes(), {"Content-Type": "image/png"})

    def _answer(self, status: int, body: bytes, headers: dict, length: bool = True) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def start_recorder() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.hits = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def canary():
    """Must never be reached: any request here is an SSRF that got through."""
    server = start_recorder()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def redirector():
    """Trusted in the redirect tests (as a configured fal host would be): where it points must be checked."""
    server = start_recorder()
    yield server
    server.shutdown()


def base_url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(autouse=True)
def canary_stays_untouched(canary):
    canary.hits.clear()
    yield
    assert canary.hits == [], f"the canary was reached: {canary.hits}"


# -- local files ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """allowed/ (the allowed directory) with hidden files and links that point out of it, beside
    secrets outside it (including a sibling whose name starts like the allowed directory's)."""
    root = tmp_path_factory.mktemp("attack")
    allowed = root / "allowed"
    for directory in (allowed / ".ssh", allowed / "sub" / ".hidden", root / "outside", root / "allowed-evil"):
        directory.mkdir(parents=True)
    for path in (
        root / "secret.png",
        root / "outside" / "secret.png",
        root / "allowed-evil" / "secret.png",
        allowed / "ok.png",
        allowed / "sub" / ".hidden" / "x.png",
    ):
        path.write_bytes(png_bytes())
    (allowed / ".env").write_text("FAL_KEY=not-for-you")
    (allowed / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    os.symlink(root / "secret.png", allowed / "link.png")
    os.symlink(root / "outside", allowed / "linkdir")
    os.symlink(allowed / ".env", allowed / "hidden_link.png")
    os.symlink(allowed / "loop_b", allowed / "loop_a")
    os.symlink(allowed / "loop_a", allowed / "loop_b")
    return root


PATH_ATTACKS = {
    "parent": ("../secret.png", "outside the allowed directories"),
    "absolute": ("{root}/secret.png", "outside the allowed directories"),
    "dotdot through a subdirectory": ("sub/../../secret.png", "outside the allowed directories"),
    "deep dotdot": ("../" * 20 + "etc/passwd", "outside the allowed directories"),
    "system file": ("/etc/passwd", "outside the allowed directories"),
    "the server's environment": ("/proc/self/environ", "system file"),
    "the server's environment by descriptor": ("/dev/fd/0", "system file"),
    "a device": ("/dev/zero", "system file"),
    "home directory": ("~/.ssh/id_rsa", "outside the allowed directories"),
    "symlink to a file outside": ("link.png", "outside the allowed directories"),
    "symlinked directory": ("linkdir/secret.png", "outside the allowed directories"),
    "sibling with the same prefix": ("{root}/allowed-evil/secret.png", "outside the allowed directories"),
    "symlink loop": ("loop_a", "not a file"),
    "hidden file": (".env", "hidden"),
    "hidden directory": (".ssh/id_rsa", "hidden"),
    "nested hidden directory": ("sub/.hidden/x.png", "hidden"),
    "innocent name linking to a hidden file": ("hidden_link.png", "hidden"),
    "the allowed directory itself": (".", "not a file"),
    "file: URL": ("file:///etc/passwd", "only http(s) URLs"),
    "file: URL into the allowed directory": ("file://{root}/allowed/ok.png", "only http(s) URLs"),
    "NUL byte": ("ok.png\x00.txt", "NUL byte"),
}
# (tool, field, other arguments): every file-taking field with the tool's base arguments, and again in
# each mode where its tool reads it itself instead of uploading it (a LocalMediaUrl field whose input
# model sends it to fal in other modes: resize_image's extend uploads, crop and pad read here).
FILE_FIELDS = [(tool.name, field, {}) for tool in schemas().values() for field in sorted(tool.media)] + [
    ("resize_image", "image_url", {"mode": "crop"}),
    ("resize_image", "image_url", {"mode": "pad"}),
]
FILE_FIELD_IDS = [f"{t}.{f}{'.' + e['mode'] if e else ''}" for t, f, e in FILE_FIELDS]


@pytest.fixture
def table(portal, portal_sandbox, registry, tree):
    portal_sandbox.state.reset()
    settings = {"FAL_MCP_ALLOWED_DIRS": str(tree / "allowed")}
    with portal.wrap_async_context_manager(tool_table_for(portal_sandbox, registry, **settings)) as table:
        yield table


def call(portal, table, tool: str, field: str, value, **extra):
    """Call `tool` with valid arguments but `field` = value; returns the error text (it must be one)."""
    arguments = {**base_arguments(schemas()[tool]), **extra, field: value}
    result = portal.call(table.call, tool, arguments)
    text = result.content[0].text
    assert result.is_error, f"{tool} accepted {field}={value!r}: {text}"
    assert f"{field}:" in text and "Internal error" not in text, text
    return text


@pytest.mark.parametrize("attack", list(PATH_ATTACKS))
@pytest.mark.parametrize(("tool", "field", "extra"), FILE_FIELDS, ids=FILE_FIELD_IDS)
def test_local_paths_cannot_leave_the_allowed_directories(
    portal, table, portal_sandbox, tree, tool, field, extra, attack
):
    value, reason = PATH_ATTACKS[attack]
    text = call(portal, table, tool, field, value.format(root=tree), **extra)
    assert reason in text, text
    assert portal_sandbox.state.requests == [], "something was uploaded"


def test_the_path_attacks_reach_every_field_both_ways(registry):
    """Each field the core uploads and each field a tool reads itself (LocalMediaUrl, in a mode where it
    reads it) is attacked above: the two ways a local path is read (media.to_fal_url before the handler,
    ToolContext.read_media in it) go through the same checks."""
    from fal_mcp.media import media_fields, read_here

    uploaded, read_locally = set(), set()
    for tool, field, extra in FILE_FIELDS:
        if tool == "upload_file":
            uploaded.add((tool, field))
            continue
        arguments = {**base_arguments(schemas()[tool]), **extra}
        args = registry.tools[tool].input_model.model_validate(arguments)
        (read_locally if field in read_here(args) else uploaded).add((tool, field))
    every = {
        (name, field) for name, tool in registry.tools.items() for field in media_fields(tool.input_model)
    }
    assert every <= {(tool, field) for tool, field, _ in FILE_FIELDS}
    assert read_locally == {
        ("compose_images", "base_image_url"),
        ("compose_images", "overlay_image_url"),
        ("resize_image", "image_url"),
    }
    assert ("resize_image", "image_url") in uploaded  # extend, its base arguments' mode


def test_an_allowed_file_is_read(portal, table, portal_sandbox):
    # the control: the same layout lets a plain file inside through
    result = portal.call(table.call, "upload_file", {"file_path": "ok.png"})
    assert not result.is_error, result.content[0].text
    assert [r["route"] for r in portal_sandbox.state.requests][-1] == "upload"


# -- SSRF: every URL the server itself downloads ------------------------------------------------------

PRIVATE_URLS = [
    "http://127.0.0.1:{canary}/x.png",
    "http://localhost:{canary}/x.png",
    "http://[::1]:{canary}/x.png",
    "http://2130706433:{canary}/x.png",
    "http://0x7f000001:{canary}/x.png",
    "http://0177.0.0.1:{canary}/x.png",
    "http://127.1:{canary}/x.png",
    "http://0.0.0.0:{canary}/x.png",
    "http://0:{canary}/x.png",
    "http://[::ffff:127.0.0.1]:{canary}/x.png",
    "http://[::ffff:7f00:1]:{canary}/x.png",
    "http://user:pass@127.0.0.1:{canary}/x.png",
    "http://example.com@127.0.0.1:{canary}/x.png",
    "https://127.0.0.1:{canary}/x.png",
    "http://10.0.0.1/x.png",
    "http://172.16.0.1/x.png",
    "http://192.168.1.1/x.png",
    "http://100.64.0.1/x.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00::1]/x.png",
    "http://[fe80::1]/x.png",
    "http://224.0.0.1/x.png",
    "http://255.255.255.255/x.png",
    "http://[::]/x.png",
]
# (tool, the field it downloads itself, the other arguments it needs)
FETCHING_FIELDS = [
    ("compose_images", "base_image_url", {}),
    ("compose_images", "overlay_image_url", {}),
    ("upscale_image", "image_url", {}),
    ("resize_image", "image_url", {"target_format": "instagram_post", "mode": "crop"}),
    ("resize_image", "image_url", {"target_format": "tiktok", "mode": "pad"}),
    ("inpaint_image", "image_url", {}),
    ("inpaint_image", "mask_url", {}),
]


@pytest.fixture(scope="module")
def stored_png(portal_sandbox) -> str:
    """A PNG on the sandbox's CDN (a configured fal host, so trusted) for the other image fields."""
    from fal_mcp_sandbox.state import file_url

    key = portal_sandbox.state.storage.put(png_bytes((300, 200)), "image/png", "in.png")
    return file_url(portal_sandbox.base_url, key, "in.png")


@pytest.mark.parametrize("url", PRIVATE_URLS)
@pytest.mark.parametrize(
    ("tool", "field", "extra"),
    FETCHING_FIELDS,
    ids=[f"{t}.{f}{'.' + e['mode'] if e else ''}" for t, f, e in FETCHING_FIELDS],
)
def test_tools_do_not_fetch_private_addresses(portal, table, canary, stored_png, tool, field, extra, url):
    others = {name: stored_png for name in schemas()[tool].media}
    text = call(portal, table, tool, field, url.format(canary=canary.server_address[1]), **others, **extra)
    assert "private, loopback or reserved address" in text, text


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x.png",
        "gopher://127.0.0.1:70/_GET",
        "dict://127.0.0.1:11211/stats",
        "jar:http://127.0.0.1/x!/y",
        "HTTP:/127.0.0.1/x",
    ],
)
def test_tools_take_no_other_scheme(portal, table, stored_png, url):
    text = call(portal, table, "compose_images", "base_image_url", url, overlay_image_url=stored_png)
    assert "only http(s) URLs" in text or "not a file" in text, text


REDIRECT_TARGETS = [
    "http://127.0.0.1:{canary}/x.png",
    "http://localhost:{canary}/x.png",
    "http://10.0.0.1/x.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{canary}/x.png",
    "http://2130706433:{canary}/x.png",
    "//127.0.0.1:{canary}/x.png",
    "file:///etc/passwd",
    "ftp://127.0.0.1/x.png",
    "gopher://127.0.0.1:{canary}/_x",
]


@pytest.mark.parametrize("target", REDIRECT_TARGETS)
async def test_a_redirect_to_a_private_address_is_refused(redirector, canary, target):
    target = target.format(canary=canary.server_address[1])
    url = f"{base_url(redirector)}/redirect?to={target}"
    with pytest.raises(MediaError, match="private, loopback or reserved|only http and https"):
        await fetch(url, trusted_urls=[base_url(redirector)])


async def test_redirects_are_followed_only_so_far(redirector):
    trusted = [base_url(redirector)]
    assert (await fetch(f"{base_url(redirector)}/hop?n=3", trusted_urls=trusted)).data == png_bytes()
    with pytest.raises(MediaError, match="more than 5 redirects"):
        await fetch(f"{base_url(redirector)}/hop?n=6", trusted_urls=trusted)


async def test_saved_outputs_follow_redirects_by_the_same_checks(redirector, canary, tmp_path):
    # one downloader, one redirect policy: each hop is checked, as for fetch
    url = f"{base_url(redirector)}/redirect?to={base_url(canary)}/x.png"
    with pytest.raises(MediaError, match="private, loopback or reserved"):
        await save(url, tmp_path / "out.png", trusted_urls=[base_url(redirector)])
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    trusted = [base_url(redirector)]
    saved = await save(f"{base_url(redirector)}/hop?n=3", tmp_path / "hops.png", trusted_urls=trusted)
    assert saved.read_bytes() == png_bytes()
    with pytest.raises(MediaError, match="more than 5 redirects"):
        await save(f"{base_url(redirector)}/hop?n=6", tmp_path / "far.png", trusted_urls=trusted)
    with pytest.raises(MediaError, match="more than the limit of 1048576 bytes"):
        await save(
            f"{base_url(redirector)}/chunked?mb=3",
            tmp_path / "big.bin",
            trusted_urls=trusted,
            max_bytes=1024 * 1024,
        )
    assert [p.name for p in tmp_path.iterdir()] == ["hops.png"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{canary}/x.png",
        "http://[::1]:{canary}/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ],
)
async def test_outputs_at_private_addresses_are_neither_previewed_nor_saved(sandbox, canary, tmp_path, url):
    # a fal result pointing into the local network: the call succeeds, with notes, and nothing is fetched
    from .conftest import sandbox_settings

    url = url.format(canary=canary.server_address[1])
    output = GenerationOutput(
        files=[OutputFile(url=url, content_type="image/png")], endpoint="fal-ai/x/y", request_id="r1"
    )
    settings = sandbox_settings(sandbox, FAL_MCP_OUTPUT_DIR=str(tmp_path / "out"))
    previews = await deliver(output, tool="generate_image", settings=settings)
    assert previews == [] and output.files[0].local_path is None
    assert any("was not saved" in note for note in output.notes)
    assert any("no preview" in note for note in output.notes)


async def test_the_address_checked_is_the_address_fetched(monkeypatch):
    """DNS rebinding against the server's own downloads: a name that resolves to a public address when
    checked and to a private one a moment later. The request must go to the address that was checked."""
    real_getaddrinfo = socket.getaddrinfo
    answers = iter(["93.184.216.34", "127.0.0.1", "127.0.0.1"])

    def rebinding(host, *args, **kwargs):
        if host in ("rebind.example", b"rebind.example"):
            address = next(answers)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 80))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:  # stands in for the network: records where to
        sent.append(request)
        return httpx.Response(200, content=png_bytes(), headers={"Content-Type": "image/png"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        fetched = await fetch("http://rebind.example/x.png", http=http)
    assert fetched.data == png_bytes()
    assert [r.url.host for r in sent] == ["93.184.216.34"] and sent[0].headers["host"] == "rebind.example"


# -- decompression bombs and oversized files ---------------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header claims another size (its CRC fixed): a bomb by declaration."""
    data = bytearray(png_bytes((1, 1)))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header[4:]
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def real_bomb() -> bytes:
    """12000x12000 one-bit pixels, all zero: 18 KB of PNG that decodes to 144 megapixels."""
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("claims 10000x10000", "10000x10000 pixels, more than the limit"),
        ("claims 100000x100000", "more pixels than the limit of 64000000"),  # PIL's own check, on opening
        ("claims 70000x1000", "70000x1000 pixels, more than the limit"),
        ("real 144-megapixel bomb", "12000x12000 pixels, more than the limit"),
        ("truncated", "not an image PIL can read|could not be decoded"),
        ("not an image", "not an image PIL can read"),
    ],
)
@pytest.mark.parametrize(
    ("tool", "field", "extra"),
    FETCHING_FIELDS,
    ids=[f"{t}.{f}{'.' + e['mode'] if e else ''}" for t, f, e in FETCHING_FIELDS],
)
def test_image_bombs_are_refused_before_decoding(
    portal, table, stored_png, bombs, tool, field, extra, image, expected
):
    import re

    others = {name: stored_png for name in schemas()[tool].media}
    text = call(portal, table, tool, field, data_uri(bombs[image]), **others, **extra)
    assert re.search(expected, text), text


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {
        "claims 10000x10000": png_claiming(10_000, 10_000),
        "claims 100000x100000": png_claiming(100_000, 100_000),
        "claims 70000x1000": png_claiming(70_000, 1000),
        "real 144-megapixel bomb": real_bomb(),
        "truncated": png_bytes((400, 300))[:200],
        "not an image": b"%PDF-1.7\n" + bytes(range(256)),
    }


def test_previews_refuse_bombs(bombs):
    for name in ("claims 100000x100000", "real 144-megapixel bomb"):
        with pytest.raises(MediaError, match="than the limit"):
            make_preview(bombs[name])


async def test_downloads_over_the_size_limit_are_cut_off(redirector):
    trusted = [base_url(redirector)]
    with pytest.raises(MediaError, match="more than the limit"):  # declared too big: not read at all
        await fetch(f"{base_url(redirector)}/big", trusted_urls=trusted)
    with pytest.raises(MediaError, match="more than the limit of 1048576 bytes"):  # no length: counted
        await fetch(f"{base_url(redirector)}/chunked?mb=3", trusted_urls=trusted, max_bytes=1024 * 1024)


def test_data_uris_and_files_over_the_upload_limit_are_refused(portal, portal_sandbox, registry, tree):
    portal_sandbox.state.reset()
    (tree / "allowed" / "big.png").write_bytes(png_bytes() + b"\0" * 30_000)
    settings = {"FAL_MCP_ALLOWED_DIRS": str(tree / "allowed"), "FAL_MCP_MAX_UPLOAD_MB": "0.01"}
    with portal.wrap_async_context_manager(tool_table_for(portal_sandbox, registry, **settings)) as small:
        text = call(portal, small, "upscale_image", "image_url", data_uri(b"\0" * 20_000))
        assert "more than the limit of 10485" in text
        text = call(portal, small, "upload_file", "file_path", "big.png")
        assert "more than the limit of 10485" in text
    assert portal_sandbox.state.requests == []


# -- over HTTP: DNS rebinding (Host, Origin) and bearer tokens ---------------------------------------------


@pytest.fixture(scope="module")
def servers():
    """A streamable-HTTP server and an SSE server, both with a bearer token."""
    env = server_env({"FAL_MCP_AUTH_TOKEN": TOKEN})
    with (
        http_server(["--sandbox", "--transport", "http"], env) as (_, mcp),
        http_server(["--sandbox", "--transport", "sse"], env) as (_, sse),
    ):
        yield {"/mcp": mcp, "/health": mcp, "/sse": sse, "/messages/?session_id=0": sse}


REQUESTS = {"/mcp": "POST", "/health": "GET", "/sse": "GET", "/messages/?session_id=0": "POST"}
FOREIGN_HOSTS = [
    "evil.example",
    "evil.example:{port}",
    "127.0.0.1.evil.example:{port}",
    "localhost.evil.example",
    "localhost:{port}.evil.example",
    "127.0.0.1:{port}@evil.example",
    "[::1].evil.example:{port}",
    "127.0.0.2:{port}",
    "0.0.0.0:{port}",
    "localhost.:{port}",
    "",
    "169.254.169.254",
]
FOREIGN_ORIGINS = [
    "https://evil.example",
    "null",
    "http://127.0.0.1.evil.example",
    "http://evil.example:{port}",
    "http://localhost.evil.example:{port}",
    "https://localhost:{port}",
    "file://",
    "http://127.0.0.2:{port}",
]


def send(servers, path: str, headers: dict) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    with httpx.Client(base_url=servers[path], timeout=10) as http:
        if REQUESTS[path] == "GET":
            with http.stream("GET", path, headers=headers) as response:  # /sse streams: headers are enough
                return response
        accept = {"Accept": "application/json, text/event-stream"}
        return http.post(path, json=body, headers={**accept, **headers})


def port_of(servers, path: str) -> int:
    return int(servers[path].rsplit(":", 1)[1])


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
@pytest.mark.parametrize("path", list(REQUESTS))
def test_foreign_host_headers_are_refused(servers, path, host):
    host = host.format(port=port_of(servers, path))
    response = send(servers, path, {"Host": host, "Authorization": f"Bearer {TOKEN}"})
    assert response.status_code in (400, 421)  # 400: a Host no HTTP parser accepts (empty, with an @)


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
@pytest.mark.parametrize("path", list(REQUESTS))
def test_foreign_origins_are_refused(servers, path, origin):
    origin = origin.format(port=port_of(servers, path))
    response = send(servers, path, {"Origin": origin, "Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 403


BAD_CREDENTIALS = {
    "none": None,
    "empty": "",
    "scheme only": "Bearer",
    "wrong": "Bearer wrong",
    "one character more": f"Bearer {TOKEN}x",
    "one character less": f"Bearer {TOKEN[:-1]}",
    "other case": f"Bearer {TOKEN.upper()}",
    "no scheme": TOKEN,
    "basic": "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode(),
    "other scheme": f"Token {TOKEN}",
    "non-ascii": "Bearer tökén".encode(),
    "two tokens": f"Bearer wrong, Bearer {TOKEN}",
}


@pytest.mark.parametrize("credential", list(BAD_CREDENTIALS))
@pytest.mark.parametrize("path", [path for path in REQUESTS if path != "/health"])
def test_missing_and_wrong_bearer_tokens_are_refused(servers, path, credential):
    value = BAD_CREDENTIALS[credential]
    headers = {} if value is None else {"Authorization": value}
    response = send(servers, path, headers)
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")


def test_the_token_is_not_taken_from_the_query_or_a_cookie(servers):
    with httpx.Client(base_url=servers["/mcp"], timeout=10) as http:
        assert http.post(f"/mcp?access_token={TOKEN}&token={TOKEN}", json={}).status_code == 401
        assert http.post("/mcp", json={}, headers={"Cookie": f"token={TOKEN}"}).status_code == 401


def test_the_right_token_gets_in_and_health_needs_none(servers):
    answer = httpx.post(
        servers["/mcp"] + "/mcp",
        json=INITIALIZE,
        timeout=10,
        headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream"},
    )
    assert answer.status_code == 200 and "mcp-session-id" in answer.headers
    assert send(servers, "/sse", {"Authorization": f"bearer {TOKEN}"}).status_code == 200  # scheme: any case
    health = httpx.get(servers["/health"] + "/health", timeout=10)
    assert health.status_code == 200 and TOKEN not in health.text


# -- the fal key never shows -----------------------------------------------------------------------------

KEY_ID, KEY_SECRET = "key-id-" + os.urandom(6).hex(), "key-secret/" + os.urandom(12).hex()
SECRET = f"{KEY_ID}:{KEY_SECRET}"  # fal keys are id:secret; either half, in any encoding, is the key


def key_forms() -> list[str]:
    from urllib.parse import quote, quote_plus

    return [
        form
        for part in (SECRET, KEY_ID, KEY_SECRET)
        for form in (part, quote(part, safe=""), quote_plus(part))
    ]


def test_the_key_never_appears_in_results_errors_or_logs(thread_sandbox, portal, tmp_path):
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    state = thread_sandbox.state
    state.reset()
    (tmp_path / "in.png").write_bytes(png_bytes())
    env = server_env(
        {
            **thread_sandbox.env(),
            "FAL_KEY": SECRET,
            "FAL_MCP_LOG_LEVEL": "DEBUG",
            "FAL_MCP_ALLOWED_DIRS": str(tmp_path),
            "FAL_MCP_TIMEOUT": "2",
        }
    )
    params = StdioServerParameters(command=sys.executable, args=["-m", "fal_mcp.cli", "serve"], env=env)
    # Each fault's message carries the key, as a careless upstream error might: whole, by halves, URL-encoded.
    from urllib.parse import quote

    leaks = (
        f"key {SECRET} rejected (id {KEY_ID}, secret {quote(KEY_SECRET, safe='')}, {quote(SECRET, safe='')})"
    )
    calls = [
        ([], "generate_image", {"prompt": "fine"}),
        ([dict(outcome="model_error", message=leaks)], "generate_image", {"prompt": "x"}),
        ([dict(route="submit", status=401, message=leaks)], "generate_music", {"prompt": "x"}),
        ([dict(route="submit", status=403, message=leaks)], "generate_image", {"prompt": "x"}),
        ([dict(route="status", status=500, times=-1, message=leaks)], "generate_image", {"prompt": "x"}),
        ([dict(route="upload", status=500, times=-1, message=leaks)], "upload_file", {"file_path": "in.png"}),
        ([dict(route="platform", status=403, message=leaks)], "get_usage", {}),
        ([dict(route="platform", status=500, times=-1, message=leaks)], "list_models", {}),
        (
            [dict(outcome="never_finish"), dict(route="cancel", status=500, times=-1, message=leaks)],
            "generate_image",
            {"prompt": "x"},
        ),
        ([], "submit_job", {"tool": "generate_image", "arguments": {"prompt": "job"}}),
        ([], "generate_image", {"prompt": 5}),
        ([], "no_such_tool", {}),
    ]
    seen = []
    with open(tmp_path / "stderr.log", "w") as errlog:

        async def run():
            async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
                for faults, tool, arguments in calls:
                    state.faults.clear()
                    for rule in faults:
                        state.add_fault(**rule)
                    result = await client.call_tool(tool, arguments)
                    seen.append(json.dumps(result.model_dump(mode="json")))
                    if tool == "submit_job":
                        job_id = result.structured_content["job_id"]
                        job = await client.call_tool("check_job", {"job_id": job_id})
                        seen.append(json.dumps(job.model_dump(mode="json")))

        portal.call(run)
    state.reset()
    logs = (tmp_path / "stderr.log").read_text()
    assert "***" in "".join(seen), "no scrubbed message: the faults did not carry the key through"
    assert logs.strip(), "nothing was logged: the log check would prove nothing"
    for text in [*seen, logs]:
        for form in key_forms():
            assert form not in text


def test_the_key_never_appears_in_the_plugins_listing(tmp_path):
    """`fal-mcp plugins` shows why a pack failed: a pack whose error quotes the key must not show it."""
    dist = tmp_path / "fal_mcp_leaky-0.0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fal-mcp-leaky\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text("[fal_mcp]\nleaky = leaky_pack\n")
    (tmp_path / "leaky_pack.py").write_text(
        "import os\nraise RuntimeError('could not log in with key ' + os.environ['FAL_KEY'])\n"
    )
    env = server_env({"FAL_KEY": SECRET, "PYTHONPATH": str(tmp_path), "FAL_MCP_LOG_LEVEL": "DEBUG"})
    outputs = []
    for args in (["plugins"], ["plugins", "--json"], ["tools", "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "fal_mcp.cli", *args], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs += [done.stdout, done.stderr]
    assert "leaky" in outputs[0] and "could not log in with key ***" in outputs[0]
    for text in outputs:
        assert SECRET not in text
