"""The media viewer: an MCP Apps view (the `io.modelcontextprotocol/ui` extension) that hosts supporting
it open beside every generation tool's result: images (grid, zoom, compare), video, audio with its
waveform, what made them and what they cost, and actions that call this server's tools again.

The view is one self-contained HTML file (viewer.html, built from viewer/ at the project root: `cd
viewer && npm ci && npm run build`). It loads nothing from the network: the media are the server's
output resources, read through the host. Clients without the extension ignore the tools' `_meta.ui`
and get the same text, previews and links as before.
"""

from __future__ import annotations

from functools import cache
from typing import Any

VIEWER_URI = "ui://fal-mcp/viewer.html"
# The resource's MCP Apps settings: no domain besides the host's (an empty CSP list), no border asked.
VIEWER_UI: dict[str, Any] = {"csp": {}, "prefersBorder": False}


@cache
def viewer_html() -> str:
    from importlib.resources import files

    return (files(__package__) / "viewer.html").read_text(encoding="utf-8")


def tool_meta(tool) -> dict[str, Any] | None:
    """`_meta` of a tool listing: generation tools open the viewer."""
    from .outputs import GenerationOutput

    return {"ui": {"resourceUri": VIEWER_URI}} if tool.output_model is GenerationOutput else None


def resource():
    from mcp import types
    from mcp.server.apps import APP_MIME_TYPE

    return types.Resource(
        uri=VIEWER_URI,
        name="viewer",
        title="fal-mcp media viewer",
        description="Shows a generation tool's images, video or audio, with its details and actions",
        mime_type=APP_MIME_TYPE,
        _meta={"ui": VIEWER_UI},
    )


def read():
    from mcp import types
    from mcp.server.apps import APP_MIME_TYPE

    return types.ReadResourceResult(
        contents=[
            types.TextResourceContents(
                uri=VIEWER_URI, mime_type=APP_MIME_TYPE, text=viewer_html(), _meta={"ui": VIEWER_UI}
            )
        ]
    )


def advertise(server) -> None:
    """Say, in the server's capabilities, that it offers MCP Apps views."""
    from mcp.server.apps import EXTENSION_ID

    server.extensions[EXTENSION_ID] = {}
