"""Context cost: what `tools/list` weighs, per pack and in total, in bytes and approximate tokens.

    .venv/bin/python benchmarks/context.py [--tools a,b,c]

Every conversation pays for the listing before a word is said. The figure is the JSON of the
`tools/list` result as the server sends it over stdio (`fal-mcp serve --sandbox`, all packs, then each
pack alone beside the core's own tools); tokens are approximated by counting words and punctuation
marks, which tracks common tokenizers within about 15% on JSON. Target: total <= 30 KB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from common import initialize_message

BIN = Path(sys.executable).parent
TARGET_BYTES = 30 * 1024
PACKS = ["image", "video", "audio", "utility"]


def tokens(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


def listing(env_extra: dict[str, str]) -> list[dict]:
    """tools/list of a real server over stdio: initialize, initialized, tools/list."""
    messages = [
        initialize_message("context-benchmark"),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_MCP_", "FAL_KEY"))}
    env.update(env_extra)
    process = subprocess.Popen(
        [str(BIN / "fal-mcp"), "serve", "--sandbox"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    for message in messages:
        process.stdin.write(json.dumps(message) + "\n")
    process.stdin.flush()
    try:
        for line in process.stdout:
            answer = json.loads(line)
            if answer.get("id") == 2:
                return answer["result"]["tools"]
        raise RuntimeError("the server closed before answering tools/list")
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def weigh(tools: list[dict]) -> tuple[int, int]:
    text = json.dumps({"tools": tools}, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode()), tokens(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", help="also weigh this FAL_MCP_TOOLS selection (comma list)")
    args = parser.parse_args()
    rows = []
    everything = listing({})
    total_bytes, total_tokens = weigh(everything)
    rows.append(("all packs", len(everything), total_bytes, total_tokens))
    core_names = {t["name"] for t in listing({"FAL_MCP_PLUGINS": "core"})}
    for pack in PACKS:
        tools = [t for t in listing({"FAL_MCP_PLUGINS": pack}) if t["name"] not in core_names]
        rows.append((pack, len(tools), *weigh(tools)))
    core = [t for t in everything if t["name"] in core_names]
    rows.append(("core (jobs, budget)", len(core), *weigh(core)))
    if args.tools:
        chosen = listing({"FAL_MCP_TOOLS": args.tools})
        rows.append((f"FAL_MCP_TOOLS={args.tools}", len(chosen), *weigh(chosen)))
    print(f"{'listing':<40} {'tools':>5} {'bytes':>8} {'~tokens':>8}")
    for name, count, size, approx in rows:
        print(f"{name:<40} {count:>5} {size:>8,} {approx:>8,}")
    largest = sorted(everything, key=lambda t: -weigh([t])[0])[:5]
    print("largest tools:", ", ".join(f"{t['name']} {weigh([t])[0]:,} B" for t in largest))
    verdict = "OK" if total_bytes <= TARGET_BYTES else "MISSED"
    print(f"total {total_bytes:,} bytes (target <= {TARGET_BYTES:,}): {verdict}")
    return 0 if verdict == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
