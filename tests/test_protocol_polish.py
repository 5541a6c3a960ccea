"""What a careful user notices (issue 22): methods generic clients call, words and listings, transparency
kept or said to be lost, one spelling of each choice listed and both taken, and what the SDK does with a
cancelled request over stateful HTTP."""

from __future__ import annotations

import base64
import io
import json
import queue
import re
import subprocess
import sys
import threading
import time

import anyio
import httpx
import pytest
from PIL import Image

from fal_mcp_sandbox.testing import clean_env, run_cli

from .conftest import http_server

pytestmark = pytest.mark.anyio
LEGACY = "2025-11-25"


# -- a raw stdio session (every message on the wire, and the server's stderr) ---------------------------------


class RawStdio:
    """`fal-mcp serve` over stdio, spoken to line by line: what a client sends and receives, exactly."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fal_mcp.cli", "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: queue.Queue = queue.Queue()
        self.received: list[dict] = []  # everything the server sent
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, message: dict) -> None:
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def answer(self, request_id, on_request=None, timeout: float = 60) -> dict:
        """The response to `request_id`; requests the server sends meanwhile go to `on_request`."""
        deadline = time.monotonic() + timeout  # a hang guard
        while True:
            message = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert message is not None, "the server closed stdout"
            self.received.append(message)
            if message.get("id") == request_id and "method" not in message:
                return message
            if "method" in message and "id" in message:
                assert on_request is not None, f"unexpected request from the server: {message}"
                self.send({"jsonrpc": "2.0", "id": message["id"], "result": on_request(message)})

    def close(self) -> str:
        """Stdin closed (the client left): the server's stderr, once it has exited."""
        self.process.stdin.close()
        self.process.wait(timeout=30)
        return self.process.stderr.read().decode(errors="replace")


def test_templates_logging_and_roots_over_stdio(thread_sandbox, tmp_path):
    thread_sandbox.state.reset()
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    env = clean_env({**thread_sandbox.env(), "FAL_MCP_ALLOWED_DIRS": str(allowed)})
    server = RawStdio(env)
    try:
        server.send(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": LEGACY,
                    "capabilities": {"roots": {"listChanged": False}},
                    "clientInfo": {"name": "raw", "version": "1"},
                },
            }
        )
        initialized = server.answer(1)["result"]
        assert "logging" in initialized["capabilities"], initialized["capabilities"]
        server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

        # resources/templates/list: answered (the MCP Inspector asks), with the outputs' template
        server.send({"jsonrpc": "2.0", "id": 2, "method": "resources/templates/list", "params": {}})
        templates = server.answer(2)
        assert "error" not in templates, templates
        assert [t["uriTemplate"] for t in templates["result"]["resourceTemplates"]] == [
            "fal-mcp://outputs/{request_id}/{index}"
        ]

        # logging/setLevel: an empty result (the conformance suite's logging-set-level), -32602 for a
        # level that is none
        for level in ("info", "debug"):
            server.send(
                {
                    "jsonrpc": "2.0",
                    "id": f"level-{level}",
                    "method": "logging/setLevel",
                    "params": {"level": level},
                }
            )
            assert server.answer(f"level-{level}")["result"] == {}
        server.send(
            {"jsonrpc": "2.0", "id": "banana", "method": "logging/setLevel", "params": {"level": "banana"}}
        )
        assert server.answer("banana")["error"]["code"] == -32602

        # a relative path, under the client's roots: the refusal says where it was looked for
        def roots(request):
            assert request["method"] == "roots/list"
            return {"roots": [{"uri": (allowed / "sub").as_uri(), "name": "sub"}]}

        server.send(
            {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {"name": "upload_file", "arguments": {"file_path": "missing.png"}},
            }
        )
        refused = server.answer(7, on_request=roots)["result"]
        text = refused["content"][0]["text"]
        assert refused["isError"] and f"resolved against {allowed / 'sub'}" in text, text
        assert str(allowed / "sub" / "missing.png") in text, text
        # at level debug, the server sent no log notification (it sends none, at any level)
        assert not [m for m in server.received if m.get("method") == "notifications/message"]
    finally:
        stderr = server.close()
    # the SDK's MCPDeprecationWarning for listing roots (deprecated in the 2026 era) stays off stderr
    assert "MCPDeprecationWarning" not in stderr and "deprecated" not in stderr.lower(), stderr


async def test_templates_in_the_2026_era_and_no_setlevel_there(thread_sandbox):
    from mcp.shared.exceptions import MCPError

    from .conftest import stdio_client

    async with stdio_client(["serve"], clean_env(thread_sandbox.env()), mode="auto") as client:
        listed = await client.list_resource_templates()
        assert [t.uri_template for t in listed.resource_templates] == [
            "fal-mcp://outputs/{request_id}/{index}"
        ]
        with pytest.raises(MCPError, match="Method not found"):  # logging/setLevel is gone in this era
            await client.session.send_request(
                __import__("mcp").types.SetLevelRequest(params={"level": "info"}),
                __import__("mcp").types.EmptyResult,
            )


# -- words and listings ------------------------------------------------------------------------------------


def test_help_says_serve_takes_every_transport():
    done = run_cli("--help")
    assert done.returncode == 0
    listed = re.search(r"\n\s+serve\s+(.*?)\n\s+plugins\s", done.stdout, re.S)  # its lines in the listing
    serve = " ".join(listed.group(1).split()) if listed else ""
    assert "stdio" in serve and "HTTP" in serve and "SSE" in serve, done.stdout


def test_sandbox_command_has_the_module_entry_points_help_and_options():
    ours = run_cli("sandbox", "--help")
    module = subprocess.run(
        [sys.executable, "-m", "fal_mcp_sandbox", "--help"], capture_output=True, text=True, env=clean_env()
    )
    assert ours.returncode == module.returncode == 0, ours.stderr
    assert "--job-seconds" in ours.stdout and "placeholder media" in ours.stdout

    # one parser: the same options and words, under the program's name (argparse wraps its usage by it)
    def body(text: str) -> str:
        return " ".join(text.split("\n\n", 1)[1].split())

    assert body(ours.stdout) == body(module.stdout)
    assert ours.stdout.startswith("usage: fal-mcp sandbox [-h] [--host HOST] [--port PORT]")
    bad = run_cli("sandbox", "--no-such-option")
    assert bad.returncode == 2 and "--no-such-option" in bad.stderr


def test_plugins_table_is_aligned_and_counts_in_words():
    done = run_cli("plugins")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) >= 5, done.stdout
    assert not re.search(r"\b1 (tools|models)\b", done.stdout), done.stdout
    assert re.search(r"\b1 tool\b", done.stdout), done.stdout  # the audio pack has one tool
    # every column starts at the same place on every line
    starts = [[match.start() for match in re.finditer(r"(?<=  )\S", line)] for line in lines]
    assert all(row[:4] == starts[0][:4] for row in starts), done.stdout


async def test_list_jobs_with_no_jobs_and_list_models_star(tool_table):
    from fal_mcp.owners import Principal

    for owner, expected in (
        (Principal("someone"), "no jobs"),
        (Principal("nobody", listable=False), "check_job"),
    ):
        result = await tool_table.call("list_jobs", {}, owner=owner)
        text = result.content[0].text
        assert not result.is_error and not text.rstrip().endswith(":") and expected in text, text
    listed = (await tool_table.call("list_models", {"limit": 50})).content[0].text
    assert "\n- * " in listed and "(* = highlighted in fal's catalogue)" in listed.splitlines()[0], listed
    plain = (await tool_table.call("list_models", {"search": "kling", "limit": 50})).content[0].text
    if "\n- * " not in plain:
        assert "(* =" not in plain
    none = (await tool_table.call("list_models", {"search": "qqqzzz-nothing"})).content[0].text
    assert not none.rstrip().endswith(":"), none


async def test_a_relative_path_refused_says_where_it_was_looked_for(sandbox, registry, tmp_path):
    from fal_mcp.gateway import FalGateway
    from fal_mcp.server import ToolTable
    from fal_mcp_sandbox.testing import sandbox_settings

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    (first / ".hidden.png").write_bytes(b"x")

    async def roots():  # the client's roots, inside what the operator allows
        return [str(first), str(second)]

    settings = sandbox_settings(sandbox, FAL_MCP_ALLOWED_DIRS=str(tmp_path))
    async with FalGateway(settings) as gateway, ToolTable(registry, settings, gateway) as table:
        for path, why in (
            ("nothing.png", "not a file"),
            ("../outside.png", "outside"),
            (".hidden.png", "hidden"),
        ):
            result = await table.call("upload_file", {"file_path": path}, allowed_dirs=roots)
            text = result.content[0].text
            assert result.is_error and why in text, text
            assert (
                f"resolved against {first}, the first of the allowed directories ({first}, {second})" in text
            )
            assert str(first / path) in text
        absolute = await table.call("upload_file", {"file_path": str(first / "none.png")}, allowed_dirs=roots)
        assert "resolved against" not in absolute.content[0].text  # said only where a path was relative


# -- choices: one spelling listed (fal's, with underscores), both taken ---------------------------------------


async def test_choices_are_listed_with_underscores_and_taken_with_hyphens(tool_table, registry):
    from fal_mcp.outputs import spelled_choices

    hyphenated = []
    checked = 0
    for listed in tool_table.listing():
        tool = registry.tools[listed.name]
        for name, prop in listed.input_schema.get("properties", {}).items():
            if name == tool.model_field:  # endpoint ids are ids, not words
                continue
            values = prop.get("enum") or prop.get("items", {}).get("enum") or []
            words = [value for value in values if isinstance(value, str)]
            hyphenated += [f"{listed.name}.{name}: {word}" for word in words if "-" in word]
            for word in (word for word in words if "_" in word):
                given = [word.replace("_", "-")] if prop.get("type") == "array" else word.replace("_", "-")
                taken = spelled_choices(tool.input_model, {name: given})[name]
                assert taken == ([word] if isinstance(given, list) else word), (listed.name, name, word)
                checked += 1
    assert not hyphenated, f"choices listed with hyphens (fal's style is underscores): {hyphenated}"
    assert checked >= 10  # image_size, target_format, position...

    base = "data:image/png;base64," + base64.b64encode(png((200, 100), (0, 0, 255, 255))).decode()
    overlay = "data:image/png;base64," + base64.b64encode(png((20, 20), (255, 0, 0, 255))).decode()
    placed = {}
    for position in ("bottom-right", "bottom_right", "top-left", "top_left"):
        args = {"base_image_url": base, "overlay_image_url": overlay, "position": position, "scale": 0.1}
        result = await tool_table.call("compose_images", args)
        assert not result.is_error, result.content[0].text
        placed[position] = re.search(r"at x=\d+, y=\d+ \((\w+)\)", result.content[0].text).group(0)
    assert placed["bottom-right"] == placed["bottom_right"] != placed["top-left"] == placed["top_left"]
    bad = await tool_table.call(
        "compose_images", {"base_image_url": base, "overlay_image_url": overlay, "position": "middle"}
    )
    assert bad.is_error and "'top_left'" in bad.content[0].text and "top-left" not in bad.content[0].text


# -- transparency ---------------------------------------------------------------------------------------------


def png(size, colour, transparent_left: bool = False) -> bytes:
    """A PNG of `colour`, its left half fully transparent if asked."""
    image = Image.new("RGBA", size, colour)
    if transparent_left:
        image.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


RGBA_INPUT = data_uri(png((64, 48), (200, 30, 30, 255), transparent_left=True))
OPAQUE_INPUT = data_uri(png((64, 48), (200, 30, 30, 255)))


async def image_at(url: str) -> Image.Image:
    async with httpx.AsyncClient() as http:
        answer = await http.get(url)
    answer.raise_for_status()
    image = Image.open(io.BytesIO(answer.content))
    image.load()
    return image


def alpha_extrema(image: Image.Image, box) -> tuple[int, int]:
    return image.convert("RGBA").getchannel("A").crop(box).getextrema()


async def call(tool_table, tool: str, arguments: dict):
    result = await tool_table.call(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content, result.content[0].text


@pytest.mark.parametrize("model,scale", [("clarity", 2), ("aura_sr", 4)])
async def test_upscaling_keeps_transparency(tool_table, model, scale):
    output, text = await call(tool_table, "upscale_image", {"image_url": RGBA_INPUT, "model": model})
    file = output["files"][0]
    image = await image_at(file["url"])
    width, height = 64 * scale, 48 * scale
    assert image.size == (width, height) and image.format == "PNG" and file["content_type"] == "image/png"
    # transparent where the input was (the left half), opaque where it was not; the edge may blend
    assert alpha_extrema(image, (0, 0, width // 2 - scale * 3 - 1, height)) == (0, 0)
    assert alpha_extrema(image, (width // 2 + scale * 3 + 1, 0, width, height)) == (255, 255)
    note = next(note for note in output["notes"] if "put back" in note)
    assert "drops transparency" in note and note in text
    # the sandbox drops the alpha channel as fal's upscalers do: their own output is opaque
    own = await image_at(re.search(r"fal's own output: (\S+?)\)", note).group(1))
    assert "A" not in own.getbands()

    opaque, _ = await call(tool_table, "upscale_image", {"image_url": OPAQUE_INPUT, "model": model})
    assert not any("transparen" in note for note in opaque["notes"])
    assert "A" not in (await image_at(opaque["files"][0]["url"])).getbands()  # fal's file, as it made it


async def test_inpainting_keeps_transparency_outside_the_mask(tool_table):
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (0, 0, 16, 48))  # repaint the leftmost quarter (transparent in the input)
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    arguments = {"image_url": RGBA_INPUT, "mask_url": data_uri(buffer.getvalue()), "prompt": "a boat"}
    output, _ = await call(tool_table, "inpaint_image", arguments)
    image = await image_at(output["files"][0]["url"])
    assert image.size == (64, 48)
    assert alpha_extrema(image, (0, 0, 15, 48)) == (255, 255)  # repainted: opaque
    assert alpha_extrema(image, (17, 0, 31, 48)) == (0, 0)  # kept, and transparent as it was
    assert alpha_extrema(image, (33, 0, 64, 48)) == (255, 255)
    assert any("repainted area opaque" in note for note in output["notes"])


@pytest.mark.parametrize(
    "tool,arguments",
    [
        ("edit_image", {"instruction": "make it night"}),
        ("generate_image_from_image", {"prompt": "in winter"}),
    ],
)
async def test_new_pictures_say_the_transparency_is_lost(tool_table, tool, arguments):
    output, text = await call(tool_table, tool, {"image_url": RGBA_INPUT, **arguments})
    lost = [note for note in output["notes"] if "has transparency" in note]
    assert len(lost) == 1 and "does not keep" in lost[0] and lost[0] in text
    assert "A" not in (await image_at(output["files"][0]["url"])).getbands()
    opaque, _ = await call(tool_table, tool, {"image_url": OPAQUE_INPUT, **arguments})
    assert not any("transparen" in note for note in opaque["notes"])


async def test_local_work_keeps_transparency_or_says_why_not(tool_table):
    resize = {"image_url": RGBA_INPUT, "target_format": "custom", "width": 128, "height": 48}

    padded, _ = await call(tool_table, "resize_image", {**resize, "mode": "pad"})
    image = await image_at(padded["files"][0]["url"])
    assert alpha_extrema(image, (0, 0, 30, 48)) == (0, 0)  # the transparent bar, and the input's left
    assert alpha_extrema(image, (70, 0, 94, 48)) == (255, 255)  # the input's opaque half
    assert any("transparent bars" in note for note in padded["notes"])

    coloured, _ = await call(
        tool_table, "resize_image", {**resize, "mode": "pad", "background_color": "#00ff00"}
    )
    image = await image_at(coloured["files"][0]["url"])
    assert "A" not in image.getbands() and image.getpixel((40, 10)) == (0, 255, 0)
    assert any("filled with the bars' colour, #00ff00" in note for note in coloured["notes"])

    cropped, _ = await call(tool_table, "resize_image", {**resize, "width": 32, "mode": "crop"})
    assert alpha_extrema(await image_at(cropped["files"][0]["url"]), (0, 0, 14, 48)) == (0, 0)
    as_jpeg, _ = await call(
        tool_table, "resize_image", {**resize, "width": 32, "mode": "crop", "output_format": "jpeg"}
    )
    assert any("JPEG has no transparency" in note for note in as_jpeg["notes"])

    extended, _ = await call(tool_table, "resize_image", {**resize, "mode": "extend"})
    assert any("outpaint does not keep" in note for note in extended["notes"])

    composed, _ = await call(
        tool_table,
        "compose_images",
        {"base_image_url": RGBA_INPUT, "overlay_image_url": OPAQUE_INPUT, "output_format": "jpeg"},
    )
    assert any("JPEG has no transparency" in note for note in composed["notes"])
    kept, _ = await call(
        tool_table, "compose_images", {"base_image_url": RGBA_INPUT, "overlay_image_url": OPAQUE_INPUT}
    )
    assert not kept["notes"] and alpha_extrema(await image_at(kept["files"][0]["url"]), (0, 0, 20, 20)) == (
        0,
        0,
    )


# -- a cancelled request over stateful HTTP ----------------------------------------------------------------------


async def test_stateful_http_cancel_is_answered_with_32800_by_the_sdk(thread_sandbox):
    """mcp 2.3's streamable HTTP transport answers a cancelled 2025-era request with -32800 ("Request
    cancelled") itself, and offers no way to turn that off (StreamableHTTPServerTransport hands every
    request an on_request_unanswered hook, _terminate_unanswered_request, which the dispatcher runs
    for a request that settles without an answer). Pinned here: if a later SDK stops answering, this
    fails, and the server can say nothing too. The fal request is cancelled either way."""
    thread_sandbox.state.reset()
    thread_sandbox.state.add_fault(outcome="never_finish")
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    call = {
        "jsonrpc": "2.0",
        "id": 41,
        "method": "tools/call",
        "params": {"name": "generate_image", "arguments": {"prompt": "x"}, "_meta": {"progressToken": 1}},
    }
    with http_server(["--transport", "http"], clean_env(thread_sandbox.env())) as (_, base):
        async with httpx.AsyncClient(timeout=60) as http:
            started = await http.post(base + "/mcp", headers=headers, json=initialize)
            session = {
                **headers,
                "Mcp-Session-Id": started.headers["mcp-session-id"],
                "Mcp-Protocol-Version": LEGACY,
            }
            await http.post(
                base + "/mcp", headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
            )
            events = []
            async with http.stream("POST", base + "/mcp", headers=session, json=call) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:") and line[5:].strip():
                        events.append(json.loads(line[5:]))
                    if "Running" in line:
                        cancelled = {
                            "jsonrpc": "2.0",
                            "method": "notifications/cancelled",
                            "params": {"requestId": 41},
                        }
                        assert (
                            await http.post(base + "/mcp", headers=session, json=cancelled)
                        ).status_code == 202
        with anyio.fail_after(30):
            while not thread_sandbox.state.cancels:
                await anyio.sleep(0.05)
    answers = [event for event in events if event.get("id") == 41]
    assert answers == [
        {"jsonrpc": "2.0", "id": 41, "error": {"code": -32800, "message": "Request cancelled"}}
    ]
