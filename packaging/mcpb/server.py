"""Starts fal-mcp inside its MCP Bundle (src/server.py there).

The host runs `uv run --directory <bundle> src/server.py` (manifest.json, server.mcp_config): uv installs
the bundle's wheels and their dependencies (pyproject.toml beside this file), then this starts
`fal-mcp serve` over stdio. The host passes the user's settings as environment variables; a setting the
user left empty arrives as an empty string, or, from some hosts, as its unexpanded `${user_config.…}`
placeholder, and both are dropped here so the server sees it unset.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

SANDBOX_SWITCH = "FAL_MCP_BUNDLE_SANDBOX"  # the bundle's own: never read by the server
SETTINGS = ("FAL_KEY", "FAL_MCP_OUTPUT_DIR", "FAL_MCP_ALLOWED_DIRS", SANDBOX_SWITCH)


def serve_arguments(environ: MutableMapping[str, str]) -> list[str]:
    """Clean the host's settings in `environ`; the arguments of `fal-mcp` that serve them."""
    for name in SETTINGS:
        value = environ.get(name, "").strip()
        if not value or value.startswith("${"):
            environ.pop(name, None)
    sandbox = environ.pop(SANDBOX_SWITCH, "").strip().lower() in ("1", "true", "yes", "on")
    return ["serve", "--sandbox"] if sandbox else ["serve"]


def main() -> int:
    arguments = serve_arguments(os.environ)
    from fal_mcp.cli import main as fal_mcp

    return fal_mcp([*arguments, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
