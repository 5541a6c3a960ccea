"""Each pack installs alone: `pip install ./core ./plugins/<pack>` gives exactly that pack's tools."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACK_TOOLS = {
    "image": {"generate_image", "generate_image_structured", "generate_image_from_image", "remove_background",
              "upscale_image", "edit_image", "inpaint_image", "resize_image", "compose_images"},
    "video": {"generate_video", "generate_video_from_image", "generate_video_from_video"},
    "audio": {"generate_music"},
    "utility": {"list_models", "recommend_model", "get_pricing", "estimate_cost", "get_usage", "upload_file",
                "get_model_schema", "run_model"},
}
CORE_TOOLS = {"submit_job", "check_job", "cancel_job", "list_jobs"}

pytestmark = pytest.mark.slow


def pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
                   check=True, capture_output=True, timeout=600)


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
    done = subprocess.run([str(python), "-m", "fal_mcp.cli", "tools", "--json"], capture_output=True, text=True,
                          timeout=60, check=True)
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
        probe = ("import sys; from fal_mcp.plugins import load_plugins; load_plugins(); "
                 "print(sorted(m for m in ('PIL', 'fal_client', 'uvicorn', 'starlette') if m in sys.modules))")
        heavy = subprocess.run([str(core_only), "-c", probe], capture_output=True, text=True, check=True).stdout
        assert heavy.strip() == "[]"
    finally:
        subprocess.run([str(core_only), "-m", "pip", "uninstall", "-y", "--quiet", f"fal-mcp-{pack}"],
                       check=True, capture_output=True)
    assert set(listed_tools(core_only)) == CORE_TOOLS
