"""The plugin loader: isolation, strict mode, allow and block lists, conflicts, misspelled hooks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fal_mcp.config import Settings
from fal_mcp.plugins import PluginError, load_plugins

from .conftest import server_env


@pytest.fixture
def with_test_packs(monkeypatch, test_packs_dir):
    monkeypatch.syspath_prepend(str(test_packs_dir))


def load(**env) -> object:
    return load_plugins(Settings.from_env(env))


def by_name(registry):
    return {pack.name: pack for pack in registry.packs}


def test_first_party_packs_are_found_and_active():
    packs = by_name(load())
    for name in ("image", "video", "audio", "utility"):
        assert packs[name].status == "active", packs[name]
        assert packs[name].distribution == f"fal-mcp-{name}"
    assert "generate_image" in load().tools


def test_broken_packs_are_isolated_and_named(with_test_packs):
    registry = load()
    packs = by_name(registry)
    assert packs["testbroken"].status == "failed"
    assert "testbroken needs a module" in packs["testbroken"].error
    assert packs["testbadtype"].status == "failed"
    assert "expected fal_mcp.Tool" in packs["testbadtype"].error
    # the others still serve
    assert packs["image"].status == "active"
    assert packs["testgood"].status == "active"
    assert "echo_test" in registry.tools
    assert registry.tool_packs["echo_test"].distribution == "fal-mcp-testgood"


def test_misspelled_hook_fails_loudly(with_test_packs):
    pack = by_name(load())["testmisspelled"]
    assert pack.status == "failed"
    assert "register_tool" in pack.error and "register_tools" in pack.error


def test_conflict_names_both_distributions_and_versions(with_test_packs):
    registry = load()
    pack = by_name(registry)["testconflict"]
    assert pack.status == "failed"
    assert "'generate_image'" in pack.error
    assert "fal-mcp-image 0.1.0" in pack.error and "fal-mcp-testconflict 2.0.0" in pack.error
    # the first registration stands, whole; nothing of the failed pack is half-registered
    assert registry.tool_packs["generate_image"].distribution == "fal-mcp-image"


def test_model_alias_conflict(with_test_packs, monkeypatch):
    from fal_mcp.plugins import Pack, Registry
    from fal_mcp.types import EndpointCall, Model

    registry = Registry()
    model = Model("same", "fal-ai/x/y", "generate_image", "one", lambda a: EndpointCall({}))
    from fal_mcp.plugins import Contributions

    registry.add(Pack("a", "fal-mcp-a", "1.0"), Contributions(models=[model]))
    with pytest.raises(PluginError, match="'same'.*fal-mcp-a 1.0.*fal-mcp-b 2.0"):
        registry.add(Pack("b", "fal-mcp-b", "2.0"), Contributions(models=[model]))


def test_strict_mode_makes_a_broken_pack_fatal(with_test_packs):
    with pytest.raises(PluginError, match="testbroken.*ImportError"):
        load(FAL_MCP_STRICT_PLUGINS="1", FAL_MCP_PLUGINS="image,testbroken")


def test_allow_list_loads_only_those(with_test_packs):
    registry = load(FAL_MCP_PLUGINS="image,testgood")
    packs = by_name(registry)
    assert packs["image"].status == packs["testgood"].status == "active"
    assert packs["video"].status == "disabled" and "FAL_MCP_PLUGINS" in packs["video"].error
    assert packs["testbroken"].status == "disabled"  # never imported, so it cannot fail
    # only those packs' tools, plus the core's own (background jobs)
    assert {pack.name for pack in registry.tool_packs.values()} == {"core", "image", "testgood"}
    assert "echo_test" in registry.tools and "generate_image" in registry.tools


def test_block_list_by_pack_or_distribution_name(with_test_packs):
    packs = by_name(load(FAL_MCP_DISABLE_PLUGINS="testgood,fal-mcp-video"))
    assert packs["testgood"].status == "disabled"
    assert packs["video"].status == "disabled"
    assert packs["image"].status == "active"


def test_third_party_model_joins_an_existing_tool(with_test_packs):
    registry = load(FAL_MCP_PLUGINS="image,testgood")
    aliases = [m.alias for m in registry.models_for("generate_image")]
    assert "testgood_model" in aliases and "flux_schnell" in aliases
    assert registry.resolve_model("generate_image", None).alias == "flux_schnell"
    assert registry.resolve_model("generate_image", "fal-ai/flux/dev").endpoint_id == "fal-ai/flux/dev"
    with pytest.raises(ValueError, match="choose one of: .*flux_schnell"):
        registry.resolve_model("generate_image", "nope")


def run_cli(*args: str, packs_dir=None, **env) -> subprocess.CompletedProcess:
    extra = dict(env)
    if packs_dir is not None:
        extra["PYTHONPATH"] = str(packs_dir)
    return subprocess.run(
        [sys.executable, "-m", "fal_mcp.cli", *args],
        capture_output=True,
        text=True,
        env=server_env(extra),
        timeout=60,
    )


def test_cli_plugins_reports_each_pack(test_packs_dir):
    done = run_cli("plugins", "--json", packs_dir=test_packs_dir)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert (
        rows["image"]["status"] == "active" and rows["image"]["tools"] >= 1 and rows["image"]["models"] >= 5
    )
    assert rows["testbroken"]["status"] == "failed" and "ImportError" in rows["testbroken"]["error"]
    assert rows["testgood"]["version"] == "1.2.3"
    # the failure is reported on stderr too
    assert "testbroken" in done.stderr
    text = run_cli("plugins", packs_dir=test_packs_dir).stdout
    assert "fal-mcp-image" in text and "active" in text and "failed" in text


def test_cli_tools_names_the_pack(test_packs_dir):
    done = run_cli("tools", "--json", packs_dir=test_packs_dir, FAL_MCP_PLUGINS="image,testgood")
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["generate_image"]["distribution"] == "fal-mcp-image"
    assert rows["echo_test"]["pack"] == "testgood"
    assert "testgood_model" in rows["generate_image"]["models"]


def test_cli_strict_exits_nonzero_with_the_reason(test_packs_dir):
    done = run_cli("tools", packs_dir=test_packs_dir, FAL_MCP_STRICT_PLUGINS="1")
    assert done.returncode == 1
    assert "testbroken" in done.stderr or "testbadtype" in done.stderr


def test_bad_setting_is_named():
    done = run_cli("tools", FAL_MCP_TIMEOUT="soon")
    assert done.returncode == 2
    assert "FAL_MCP_TIMEOUT" in done.stderr and "soon" in done.stderr


def test_fal_mcp_tools_serves_only_the_tools_it_names():
    import pytest

    from fal_mcp.config import ConfigError, Settings
    from fal_mcp.plugins import load_plugins

    compact = "run_model,get_model_schema,list_models,submit_job,check_job,upload_file"
    registry = load_plugins(Settings.from_env({"FAL_MCP_TOOLS": compact}))
    assert sorted(registry.tools) == sorted(compact.split(","))
    assert {name for pack in registry.packs for name in pack.tools} == set(compact.split(","))
    assert registry.models_for("generate_image")  # the models stay: run_model and list_models know them
    with pytest.raises(ConfigError, match="'generat_image'.*The tools are: .*generate_image"):
        load_plugins(Settings.from_env({"FAL_MCP_TOOLS": "generat_image"}))
