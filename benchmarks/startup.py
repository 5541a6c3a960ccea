"""Startup: process start to the `initialize` answer over stdio, fal-mcp (all packs) vs a bare mcp server.

    .venv/bin/python benchmarks/startup.py [--runs 15]

Runs alternate between the two servers so machine noise hits both alike; the
figure that matters is the ratio of medians (target <= 1.05: TARGET). Also checks
that loading every pack imports none of fal_client, PIL, uvicorn, starlette.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import initialize_message

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
INITIALIZE = json.dumps(initialize_message()) + "\n"
HEAVY = ("fal_client", "PIL", "uvicorn", "starlette", "httpx")
TARGET = 1.05  # fal-mcp (all packs) / bare mcp server, medians


def time_to_initialize(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    process.stdin.write(INITIALIZE.encode())
    process.stdin.flush()
    line = process.stdout.readline()
    elapsed = time.perf_counter() - started
    process.stdin.close()
    process.wait(timeout=10)
    answer = json.loads(line)
    assert answer["id"] == 1 and "result" in answer, answer
    return elapsed


def heavy_imports_after_loading_packs() -> list[str]:
    code = (
        "import sys; from fal_mcp.plugins import load_plugins; r = load_plugins(); "
        "from fal_mcp.server import ToolTable; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [name for name in out.strip().split(",") if name]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    # A pip install compiles bytecode; this checkout's editable sources may have none (e.g. with
    # PYTHONDONTWRITEBYTECODE set), which would charge compiling them to every start.
    root = HERE.parent
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            str(root / "core" / "src"),
            *[str(path) for path in (root / "plugins").glob("*/src")],
        ],
        check=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_KEY", "FAL_MCP_"))}
    ours = [str(BIN / "fal-mcp"), "serve"]
    bare = [sys.executable, str(HERE / "bare_server.py")]
    for command in (ours, bare):  # warm the file cache
        time_to_initialize(command, env)
    timings: dict[str, list[float]] = {"fal-mcp": [], "bare": []}
    for _ in range(args.runs):
        timings["fal-mcp"].append(time_to_initialize(ours, env))
        timings["bare"].append(time_to_initialize(bare, env))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    ratio = medians["fal-mcp"] / medians["bare"]
    heavy = heavy_imports_after_loading_packs()
    print(f"runs: {args.runs} each, alternating")
    print(f"bare mcp server (1 tool): median {medians['bare'] * 1000:.0f} ms")
    print(f"fal-mcp serve (all packs): median {medians['fal-mcp'] * 1000:.0f} ms")
    print(f"ratio: {ratio:.3f} (target <= {TARGET}) {'OK' if ratio <= TARGET else 'MISSED'}")
    print(f"heavy modules imported at load: {', '.join(heavy) or 'none'}")
    return 0 if ratio <= TARGET and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
