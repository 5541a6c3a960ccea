"""Each pack installs alone: `pip install ./core ./plugins/<pack>` gives exactly that pack's tools."""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

from fal_mcp_sandbox import read_settings

ROOT = Path(__file__).resolve().parent.parent
PACK_TOOLS = {
    "image": {
        "generate_image",
        "generate_image_structured",
        "generate_image_from_image",
        "remove_background",
        "upscale_image",
        "edit_image",
        "inpaint_image",
        "resize_image",
        "compose_images",
    },
    "video": {"generate_video", "generate_video_from_image", "generate_video_from_video"},
    "audio": {"generate_music"},
    "utility": {
        "list_models",
        "recommend_model",
        "get_pricing",
        "estimate_cost",
        "get_usage",
        "upload_file",
        "get_model_schema",
        "run_model",
    },
}
CORE_TOOLS = {"submit_job", "check_job", "cancel_job", "list_jobs", "get_budget"}

pytestmark = pytest.mark.slow


def pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        check=True,
        capture_output=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def core_only(tmp_path_factory) -> Path:
    """A fresh virtual environment with only fal-mcp-core installed (a real, non-editable install)."""
    home = tmp_path_factory.mktemp("bare")
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / "bin" / "python"
    pip(python, "setuptools>=68", "wheel")
    pip(python, str(ROOT / "core"))
    return python


def listed_tools(python: Path) -> dict[str, str]:
    done = subprocess.run(
        [str(python), "-m", "fal_mcp.cli", "tools", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {row["name"]: row["pack"] for row in json.loads(done.stdout)}


def test_the_core_alone_serves_only_its_job_tools(core_only):
    assert set(listed_tools(core_only)) == CORE_TOOLS


@pytest.mark.parametrize("pack", sorted(PACK_TOOLS))
def test_each_pack_installs_alone(core_only, pack):
    pip(core_only, "--no-deps", "--no-build-isolation", str(ROOT / "plugins" / pack))
    try:
        tools = listed_tools(core_only)
        assert {name for name, owner in tools.items() if owner == pack} == PACK_TOOLS[pack]
        assert set(tools) == PACK_TOOLS[pack] | CORE_TOOLS
        # and it never imported the heavy libraries just by loading
        probe = (
            "import sys; from fal_mcp.plugins import load_plugins; load_plugins(); "
            "print(sorted(m for m in ('PIL', 'fal_client', 'uvicorn', 'starlette') if m in sys.modules))"
        )
        heavy = subprocess.run(
            [str(core_only), "-c", probe], capture_output=True, text=True, check=True
        ).stdout
        assert heavy.strip() == "[]"
        # and the wheel carries fal's schema of every endpoint the pack's models call (package data)
        probe = (
            "from fal_mcp.plugins import load_plugins; models = load_plugins().models.values(); "
            "print(len(models), sorted(m.endpoint_id for m in models if not (m.input_schema() "
            "and m.output_schema())))"
        )
        schemas = subprocess.run(
            [str(core_only), "-c", probe], capture_output=True, text=True, check=True
        ).stdout
        count, missing = schemas.split(" ", 1)
        assert missing.strip() == "[]" and (int(count) > 0) == (pack != "utility"), schemas
    finally:
        subprocess.run(
            [str(core_only), "-m", "pip", "uninstall", "-y", "--quiet", f"fal-mcp-{pack}"],
            check=True,
            capture_output=True,
        )
    assert set(listed_tools(core_only)) == CORE_TOOLS


def uninstall(python: Path, *distributions: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "uninstall", "-y", "--quiet", *distributions],
        check=True,
        capture_output=True,
    )


def test_core_and_a_pack_without_the_sandbox_say_how_to_add_it(core_only):
    """`pip install ./core ./plugins/image` is a server with no fake of fal: asking for the sandbox
    fails with exit code 2 and the install command, on stderr."""
    pip(core_only, "--no-deps", "--no-build-isolation", str(ROOT / "plugins" / "image"))
    try:
        probe = (
            "import importlib.util as u; print([m for m in ('fal_mcp_sandbox', 'fal_mcp.sandbox', "
            "'fal_mcp.testing') if u.find_spec(m)])"
        )
        found = subprocess.run([str(core_only), "-c", probe], capture_output=True, text=True, check=True)
        assert found.stdout.strip() == "[]"  # no fake of fal anywhere, nor the old one in the core
        for command in (["serve", "--sandbox"], ["sandbox"]):
            done = subprocess.run(
                [str(core_only), "-m", "fal_mcp.cli", *command],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=60,
            )
            assert done.returncode == 2, done.stderr
            assert "pip install fal-mcp-sandbox" in done.stderr and "fal-mcp" in done.stderr
            assert done.stdout == ""
    finally:
        uninstall(core_only, "fal-mcp-image")


def test_the_sandbox_installs_beside_the_core_and_is_no_pack(core_only):
    """fal-mcp-sandbox as a real (non-editable) install: it runs alone, serves the installed pack's
    endpoints, and is never loaded as a pack."""
    pip(
        core_only, "--no-deps", "--no-build-isolation", str(ROOT / "sandbox"), str(ROOT / "plugins" / "image")
    )
    try:
        packs = subprocess.run(
            [str(core_only), "-m", "fal_mcp.cli", "plugins", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert {row["distribution"] for row in json.loads(packs.stdout)} == {"fal-mcp-core", "fal-mcp-image"}
        process = subprocess.Popen(
            [str(core_only), "-m", "fal_mcp_sandbox", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            settings = read_settings(process.stdout)
            base = settings["FAL_MCP_QUEUE_URL"].removesuffix("/queue")
            import urllib.request

            health = json.loads(urllib.request.urlopen(base + "/_sandbox/health", timeout=10).read())
            assert health["status"] == "ok" and health["endpoints"] >= 10  # the image pack's
        finally:
            process.terminate()
            process.wait(timeout=10)
    finally:
        uninstall(core_only, "fal-mcp-sandbox", "fal-mcp-image")
    assert set(listed_tools(core_only)) == CORE_TOOLS
