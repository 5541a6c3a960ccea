"""What `fal-mcp serve` does before it answers `initialize` (benchmarks/startup.py): no collector passes
over start-up's long-lived objects, and no pydantic model built before its first use."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

from fal_mcp import cli

from .conftest import server_env

# A served process, its stdio transport replaced by a probe of the collector as serving begins.
PROBE = """
import gc, json, sys
from fal_mcp import cli, server

async def probe(table):
    print(json.dumps({
        "enabled": gc.isenabled(),
        "threshold": list(gc.get_threshold()),
        "expected": list(cli.GC_THRESHOLDS),
        "sdk_loaded": "mcp.server.lowlevel" in sys.modules,
    }))

server.serve_stdio = probe
sys.exit(cli.main(["serve", "--transport", "stdio"]))
"""


def test_serving_begins_with_the_collector_on_and_the_sdk_frozen():
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=server_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["enabled"] and seen["threshold"] == seen["expected"]
    # The SDK is imported before the freeze, its objects (most of a start's) frozen with the rest.
    assert seen["sdk_loaded"]


def test_a_start_that_fails_leaves_the_collector_as_it_was(monkeypatch, capsys):
    monkeypatch.setenv("FAL_MCP_PLUGINS", "imge")  # a configuration error, found when packs load
    assert gc.isenabled()
    assert cli.main(["serve"]) == 2
    assert "imge" in capsys.readouterr().err
    assert gc.isenabled()


LOADED = """
import json
from fal_mcp.plugins import load_plugins
from fal_mcp.server import ToolTable  # noqa: F401

registry = load_plugins()
built = sorted(
    f"{tool.name}: {model.__name__}"
    for tool in registry.tools.values()
    for model in (tool.input_model, tool.output_model)
    if model is not None and model.__pydantic_complete__
)
print(json.dumps(built))
"""


def test_loading_the_packs_builds_no_tool_model():
    """Input and output models are built (their validators and schemas) when first used: tools/list or
    a call, not while the server starts."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED], capture_output=True, text=True, env=server_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
