"""Compose timings (issue 20): where the time of compose_images on a 4096x4096 base goes: decoding the
inputs, compositing, encoding the result, and making the preview from it (which decodes the output
again), against the whole call through the server.

    .venv/bin/python benchmarks/compose_timings.py [--rounds 3] [--profile]

In-process split: today's pipeline, stage by stage, with the image pack's and the core's own functions
(media.open_image, _common.normalised, compose_images.compose, _common.encode, delivery.make_preview),
on the same inputs as benchmarks/local_images.py (a noisy 4096x4096 JPEG base, an 800x400 translucent PNG
logo at scale 0.2), median of `--rounds`. A stage whose function the code no longer has is reported as
gone. Whole call: compose_images over streamable HTTP (sandbox in its own process, where the result is
uploaded and, for the preview, downloaded again), median of `--rounds` after a warm-up call; what the
split does not cover is the upload, the download and the protocol.

`--profile` also samples the server with py-spy (`.venv/bin/pip install py-spy`) through those calls
and splits its busy samples by the Pillow or zlib work they were in: it follows whatever the code does.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import BIN, McpConnection, clean_env, http_server, run_facts, sandbox_process, tool_error


def make_inputs(folder: Path) -> tuple[Path, Path]:
    from PIL import Image

    Image.effect_noise((4096, 4096), 60).convert("RGB").save(folder / "base.jpg", quality=90)
    Image.new("RGBA", (800, 400), (200, 30, 30, 180)).save(folder / "logo.png")
    return folder / "base.jpg", folder / "logo.png"


def in_process(base_path: Path, logo_path: Path, rounds: int) -> tuple[dict[str, float], dict[str, str]]:
    """Median seconds of each stage; notes (sizes, stages gone)."""
    times: dict[str, list[float]] = {}
    notes: dict[str, str] = {}

    def timed(stage: str, work, *args, **kwargs):
        started = time.perf_counter()
        value = work(*args, **kwargs)
        times.setdefault(stage, []).append(time.perf_counter() - started)
        return value

    try:
        from fal_mcp.delivery import make_preview
        from fal_mcp.media import open_image
        from fal_mcp_image._common import encode, normalised
        from fal_mcp_image.compose_images import compose
    except ImportError as exc:
        return {}, {"gone": f"today's stages are not all there any more ({exc})"}

    def both(first, second):
        return normalised(first), normalised(second)

    for _ in range(rounds):
        base_data, logo_data = timed(
            "read the input files", lambda: (base_path.read_bytes(), logo_path.read_bytes())
        )
        base = timed("decode the 4096x4096 JPEG base", open_image, base_data)
        logo = timed("decode the overlay PNG", open_image, logo_data)
        base, logo = timed("normalise (convert: a copy of each)", both, base, logo)
        width = round(base.width * 0.2)
        size = (width, round(logo.height * width / logo.width))
        at = (base.width - size[0] - 20, base.height - size[1] - 20)
        result = timed(
            "compose (resize overlay, composite its region)",
            compose,
            base,
            logo,
            size=size,
            at=at,
            opacity=1.0,
        )
        png = timed("encode the result: PNG, zlib level 1", encode, result, "png")
        notes["png"] = f"{len(png) / 1e6:.1f} MB"
        timed("preview: decode our own PNG again", open_image, png)
        preview, mime = timed("preview: make_preview in all (decode, thumbnail, JPEG)", make_preview, png)
        notes["preview"] = f"{len(preview) / 1e3:.0f} KB {mime}"
        jpeg = timed("(for comparison) encode the result: JPEG quality 92", encode, result, "jpeg")
        notes["jpeg"] = f"{len(jpeg) / 1e6:.1f} MB"
        timed("(for comparison) preview from the image in memory", _preview_from_image, result.copy())
    return {stage: statistics.median(values) for stage, values in times.items()}, notes


def _preview_from_image(image) -> bytes:
    image.thumbnail((1024, 1024))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


# py-spy samples by the stage of today's pipeline they were in, found by function names on the stack
def pil_stage(stack: list[str]) -> str:
    names = [frame.split(" (")[0] for frame in stack]
    text = ";".join(stack)
    if "make_preview" in text:
        return "preview (make_preview: decode own output, thumbnail, JPEG)"
    if any(name in ("encode", "Image.save") for name in names) and "PIL" in text:
        return "encode the result"
    if "open_image" in text or "ImageFile.load" in names:
        return "decode inputs"
    if "compose" in names or any(
        n.startswith(("Image.alpha_composite", "Image.resize", "Image.paste")) for n in names
    ):
        return "compose"
    if "normalised" in names or "Image.convert" in names:
        return "normalise (convert)"
    return "other (protocol, upload, download, event loop)"


async def whole_calls(
    base_path: Path, logo_path: Path, rounds: int, profile: bool, before_each
) -> tuple[list[float], Counter | None]:
    with (
        tempfile.TemporaryDirectory() as state,
        sandbox_process("--job-seconds", "0") as (settings, _),
    ):
        env = clean_env(
            {
                **settings,
                "FAL_MCP_PLUGINS": "image",
                "FAL_MCP_STATE_DIR": state,
                "FAL_MCP_ALLOWED_DIRS": str(base_path.parent),
            }
        )
        with http_server(["--transport", "http"], env) as (server, base, _):
            connection = McpConnection(base)
            await connection.initialize()
            arguments = {"base_image_url": str(base_path), "overlay_image_url": str(logo_path), "scale": 0.2}

            async def call() -> float:
                started = time.perf_counter()
                error = tool_error(await connection.call_tool("compose_images", arguments))
                if error:
                    raise RuntimeError(f"compose_images failed: {error[:300]}")
                return time.perf_counter() - started

            await call()  # warm-up: imports, clients
            spying, raw = None, Path(state) / "spy.txt"
            spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
            if profile and spy:
                spying = subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(server.pid),
                        "--rate",
                        "200",
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                await asyncio.sleep(1.0)
            elif profile:
                print("profile: py-spy is not installed (.venv/bin/pip install py-spy); skipped")
            times = []
            for _ in range(rounds):
                before_each()  # in this process, while the server is idle: each side meets the same load
                times.append(await call())
            await connection.close()
            shares = None
            if spying is not None:
                spying.send_signal(signal.SIGINT)
                spying.wait(timeout=60)
                shares = Counter()
                for line in raw.read_text().splitlines() if raw.exists() else []:
                    stack_text, _, count = line.rpartition(" ")
                    stack = stack_text.split(";")
                    leaf = stack[-1].split(" (")[0]
                    if not count.isdigit() or leaf in (
                        "Condition.wait",
                        "EpollSelector.select",
                        "Event.wait",
                    ):
                        continue
                    shares[pil_stage(stack)] += int(count)
    return times, shares


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        base_path, logo_path = make_inputs(Path(tmp))
        rounds: list[dict[str, float]] = []
        notes: dict[str, str] = {}

        def split() -> None:
            stages, found = in_process(base_path, logo_path, 1)
            rounds.append(stages)
            notes.update(found)

        calls, shares = await whole_calls(base_path, logo_path, args.rounds, args.profile, split)
        stages = {stage: statistics.median(r[stage] for r in rounds) for stage in rounds[0]}
    print(run_facts())
    print(
        f"compose_images on a 4096x4096 noisy JPEG base, 800x400 PNG overlay at scale 0.2; median of {args.rounds}"
    )
    whole = statistics.median(calls)
    print(
        f"\nwhole call through the server (HTTP, sandbox in its own process): {whole * 1000:.0f} ms "
        f"(calls: {', '.join(f'{c * 1000:.0f}' for c in calls)} ms)"
    )
    if not stages:
        print(notes.get("gone", "no in-process split"))
        return 0
    pipeline = [
        stage for stage in stages if not stage.startswith("(") and not stage.startswith("preview: decode")
    ]
    covered = sum(stages[stage] for stage in pipeline)
    print("\nin-process split of today's pipeline (ms, and share of the whole call):")
    for stage, seconds in stages.items():
        share = f"{seconds / whole * 100:5.1f}%" if not stage.startswith("(") else "     "
        print(f"  {seconds * 1000:7.0f} ms {share}  {stage}")
    print(
        f"  {(whole - covered) * 1000:7.0f} ms {(whole - covered) / whole * 100:5.1f}%  the rest: uploading the "
        "result, downloading it again for the preview, the protocol, moving work to threads"
    )
    print(f"PNG result {notes.get('png')}; JPEG would be {notes.get('jpeg')}; preview {notes.get('preview')}")
    encode = stages.get("encode the result: PNG, zlib level 1", 0)
    decode = sum(s for name, s in stages.items() if name.startswith("decode"))
    compose = stages.get("compose (resize overlay, composite its region)", 0)
    preview = stages.get("preview: make_preview in all (decode, thumbnail, JPEG)", 0)
    print(
        f"encode {encode / whole * 100:.0f}%, decode of the inputs {decode / whole * 100:.0f}%, compose "
        f"{compose / whole * 100:.0f}%, preview (decodes our own output again) {preview / whole * 100:.0f}% of the call"
    )
    if shares:
        total = sum(shares.values())
        print(f"\nthe server's busy samples during the calls (py-spy, {total} samples, every thread):")
        for name, count in shares.most_common():
            print(f"  {count / total * 100:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="py-spy on the server through the calls")
    sys.exit(asyncio.run(main(parser.parse_args())))
