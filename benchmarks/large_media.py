"""Large media (issue 20): the HTTP server's memory (RSS, from /proc) through large transfers, and whether
it comes back when the server goes idle.

    .venv/bin/python benchmarks/large_media.py [--mb 200] [--composes 3] [--idle 5]

Steps, one server (`fal-mcp serve --transport http`, image, utility and audio packs), the sandbox in its
own process:
1. warm-up (a small upload, a small download, a small compose: every module loaded), then idle: the
   baseline RSS;
2. upload_file of a `--mb` MB local file (in FAL_MCP_ALLOWED_DIRS; FAL_MCP_MAX_UPLOAD_MB raised to fit);
3. a `--mb` MB download: generate_music with FAL_MCP_OUTPUT_DIR set, so the server saves its output
   file. The stock sandbox draws at most ~19 MB of audio (10 min of 16 kHz mono WAV) and small videos,
   so this script starts the sandbox with one addition of its own (nothing in sandbox/ changes): a job
   whose prompt reads `BIG-OUTPUT <bytes>` returns, in place of the file it drew, a file of that size
   stored on the sandbox's CDN;
4. `--composes` compose_images on a 4096x4096 base (a noisy JPEG, as benchmarks/local_images.py);
5. `--idle` seconds with no calls.
For each step: the peak RSS growth over the RSS before it (VmHWM, reset before each step through
/proc/<pid>/clear_refs) and the RSS after it. Target: RSS after the idle time within 50 MB of the
baseline; uploads and downloads streamed (peak growth a few chunks, not a multiple of the file).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from common import (
    McpConnection,
    clean_env,
    http_server,
    reset_peak_rss,
    rss_mb,
    run_facts,
    tool_error,
)

TARGET_MB = 50.0

# The sandbox with one addition: a job whose input holds the string "BIG-OUTPUT <bytes>" answers with a
# file of that many bytes (stored once on its CDN) in place of the first file it drew.
BIG_SANDBOX = r"""
import re, sys
import fal_mcp_sandbox
from fal_mcp_sandbox import generate

drawn = generate.run
stored = {}


def first_file(node):
    if isinstance(node, dict):
        if "url" in node:
            return node
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = first_file(child)
        if found is not None:
            return found
    return None


def run(endpoint, args, ctx):
    result, usage = drawn(endpoint, args, ctx)
    asked = next((re.search(r"BIG-OUTPUT (\d+)", v) for v in args.values() if isinstance(v, str)), None)
    if asked:
        size = int(asked[1])
        if size not in stored:
            header = b"RIFF" + (size - 8).to_bytes(4, "little") + b"WAVE"
            stored[size] = ctx.store(header + bytes(size - len(header)), "audio/wav", "big.wav")
        file = first_file(result)
        file.update(url=stored[size], content_type="audio/wav", file_name="big.wav", file_size=size)
    return result, usage


generate.run = run
sys.exit(fal_mcp_sandbox.main(sys.argv[1:]))
"""


def start_sandbox(*args: str):
    """The sandbox above in its own process; (settings, process)."""
    import subprocess

    process = subprocess.Popen(
        [sys.executable, "-c", BIG_SANDBOX, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=clean_env(),
    )
    from fal_mcp_sandbox import read_settings

    settings = read_settings(process.stdout)
    return settings, process


def make_images(folder: Path) -> dict[str, Path]:
    """A 4096x4096 noisy JPEG base, a 512x512 one, an 800x400 translucent PNG logo."""
    from PIL import Image

    base = Image.effect_noise((4096, 4096), 60).convert("RGB")
    base.save(folder / "base.jpg", quality=90)
    base.resize((512, 512)).save(folder / "small.jpg", quality=90)
    Image.new("RGBA", (800, 400), (200, 30, 30, 180)).save(folder / "logo.png")
    return {
        name: folder / f"{name}.{ext}" for name, ext in (("base", "jpg"), ("small", "jpg"), ("logo", "png"))
    }


class Steps:
    def __init__(self, pid: int, connection: McpConnection) -> None:
        self.pid, self.connection = pid, connection
        self.rows: list[tuple[str, float, float, float, float]] = []
        self.peaks_exact = True

    async def call(self, name: str, arguments: dict, timeout: float = 300) -> dict:
        result = await asyncio.wait_for(self.connection.call_tool(name, arguments), timeout)
        error = tool_error(result)
        if error:
            raise RuntimeError(f"{name} failed: {error[:500]}")
        return result

    async def step(self, label: str, name: str, arguments: dict) -> None:
        before = rss_mb(self.pid)
        self.peaks_exact &= reset_peak_rss(self.pid)
        started = time.perf_counter()
        await self.call(name, arguments)
        seconds = time.perf_counter() - started
        self.rows.append((label, seconds, before, rss_mb(self.pid, "VmHWM") - before, rss_mb(self.pid)))


async def run_server(
    env: dict, plan: list[tuple[str, str, dict]], warm_up: list[tuple[str, dict]], idle: float
):
    """One server: the warm-up calls, `idle` s, then each step of `plan`, then `idle` s more sampling
    RSS. Returns (RSS at start, baseline, Steps, RSS after the steps, idle timeline)."""
    with http_server(["--transport", "http"], env) as (server, base, _):
        connection = McpConnection(base)
        await connection.initialize()
        steps = Steps(server.pid, connection)
        started = rss_mb(server.pid)
        for name, arguments in warm_up:
            await steps.call(name, arguments)
        await asyncio.sleep(idle)
        baseline = rss_mb(server.pid)
        for label, name, arguments in plan:
            await steps.step(label, name, arguments)
        after = rss_mb(server.pid)
        timeline = []
        for _ in range(max(1, int(idle / 0.5))):
            await asyncio.sleep(0.5)
            timeline.append(rss_mb(server.pid))
        await connection.close()
    return started, baseline, steps, after, timeline


def show(steps: Steps, baseline: float | None = None) -> None:
    for label, seconds, before, growth, after in steps.rows:
        print(f"{label} | {seconds:.2f} | {before:.0f} MB | +{growth:.0f} MB | {after:.0f} MB")
    if not steps.peaks_exact:
        print("(the peak could not be reset between steps: each peak is the highest so far)")


async def main(args: argparse.Namespace) -> int:
    size = args.mb * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        inputs, outputs = folder / "in", folder / "out"
        inputs.mkdir()
        outputs.mkdir()
        images = make_images(inputs)
        big = inputs / "upload.bin"
        with open(big, "wb") as out:
            for _ in range(args.mb):
                out.write(os.urandom(1024 * 1024))
        (inputs / "small.bin").write_bytes(os.urandom(1024 * 1024))
        settings, sandbox = start_sandbox("--job-seconds", "0")
        try:
            env = clean_env(
                {
                    **settings,
                    "FAL_MCP_PLUGINS": "image,utility,audio",
                    "FAL_MCP_STATE_DIR": str(folder / "state"),
                    "FAL_MCP_ALLOWED_DIRS": str(inputs),
                    "FAL_MCP_OUTPUT_DIR": str(outputs),
                    "FAL_MCP_MAX_UPLOAD_MB": str(args.mb + 50),
                }
            )
            music = {"prompt": "calm piano", "duration_seconds": 5}
            compose = {"overlay_image_url": str(images["logo"]), "scale": 0.2}
            # warm-up: every module and client a step uses, at small sizes
            warm_up = [
                ("upload_file", {"file_path": str(inputs / "small.bin")}),
                ("generate_music", {**music, "prompt": "BIG-OUTPUT 1048576 warm-up"}),
                ("compose_images", {**compose, "base_image_url": str(images["small"])}),
            ]
            upload = (f"upload_file, {args.mb} MB", "upload_file", {"file_path": str(big)})
            download = (
                f"download, {args.mb} MB (generate_music, output saved)",
                "generate_music",
                {**music, "prompt": f"BIG-OUTPUT {size} piano"},
            )
            composes = [
                (
                    f"compose_images {n}, 4096x4096 base",
                    "compose_images",
                    {**compose, "base_image_url": str(images["base"])},
                )
                for n in range(1, args.composes + 1)
            ]
            alone = []
            for step in (upload, download, composes[0]):  # each on a fresh server: its own peak
                alone.append(await run_server(env, [step], warm_up, args.idle))
            saved = max((p.stat().st_size for p in outputs.iterdir() if p.suffix == ".wav"), default=0)
            started, baseline, steps, after_work, timeline = await run_server(
                env, [upload, download, *composes], warm_up, args.idle
            )
        finally:
            sandbox.terminate()
            sandbox.wait(timeout=10)
    print(run_facts())
    print(
        f"server RSS through large transfers: fal-mcp serve --transport http (image, utility, audio packs), "
        f"sandbox in its own process (job time 0); {args.mb} MB = {size:,} bytes"
    )
    print(
        f"the download saved {saved:,} bytes to FAL_MCP_OUTPUT_DIR ({'complete' if saved == size else 'INCOMPLETE'})"
    )
    print(
        "\neach transfer alone, on a fresh server after warm-up and idle (peak growth = VmHWM - RSS before):"
    )
    print("step | seconds | RSS before | peak growth | RSS after")
    for _, _, steps_alone, _, _ in alone:
        show(steps_alone)
    print(f"\nall in sequence on one server: RSS at start {started:.0f} MB, idle baseline {baseline:.0f} MB")
    print("step | seconds | RSS before | peak growth | RSS after")
    show(steps)
    print(
        f"RSS after the work {after_work:.0f} MB; then idle, every 0.5 s: {', '.join(f'{v:.0f}' for v in timeline)}"
    )
    idle = timeline[-1]
    grown = idle - baseline
    ok = grown <= TARGET_MB
    print(
        f"after {args.idle:g} s idle: {idle:.0f} MB, {grown:+.0f} MB from the baseline "
        f"(target within {TARGET_MB:g} MB) {'OK' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mb", type=int, default=200, help="size of the upload and the download (default 200)"
    )
    parser.add_argument("--composes", type=int, default=3, help="compose_images calls (default 3)")
    parser.add_argument(
        "--idle", type=float, default=5, help="seconds idle before the baseline and at the end"
    )
    sys.exit(asyncio.run(main(parser.parse_args())))
