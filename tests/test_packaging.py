"""Installing fal-mcp where users install MCP servers: uvx and pipx from a checkout or git, the MCP Bundle
(.mcpb) for Claude Desktop, and the MCP Registry's server.json.

The fast tests check the metadata: server.json against the registry's schema (vendored, pinned by its
hash), one version everywhere, the registry name claimed in the README, the bundle's launcher, and the
bundle built by scripts/build_mcpb.py and checked by `mcpb validate` (the npm package, installed here).
The slow ones install for real, as a user would, from a copy of this working tree, with uv and pipx
installed from PyPI into a scratch environment, then talk MCP (initialize, tools/list, a call on the
offline sandbox) to what they installed; and run the unpacked bundle the way its manifest tells a host.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import anyio
import jsonschema
import pytest

from fal_mcp_sandbox.testing import clean_env

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
SERVER_JSON = PACKAGING / "server.json"
MANIFEST = PACKAGING / "mcpb" / "manifest.json"
LAUNCHER = PACKAGING / "mcpb" / "server.py"
# https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json, the current released
# schema (packaging/README.md says where the copy comes from).
SCHEMA = PACKAGING / "server.schema.json"
SCHEMA_URL = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
SCHEMA_SHA256 = "3fba09590c99f61735d234822279f4223fab9e300c0a81e81c91ab62a4114de0"
MCPB_PACKAGE = "@anthropic-ai/mcpb@2.1.2"
FIRST_PARTY = {
    "fal-mcp-core": "core",
    "fal-mcp-sandbox": "sandbox",
    "fal-mcp-image": "plugins/image",
    "fal-mcp-video": "plugins/video",
    "fal-mcp-audio": "plugins/audio",
    "fal-mcp-utility": "plugins/utility",
}
INSTALL_TIMEOUT = 900  # seconds: a cold install downloads ~50 packages from PyPI


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def project(directory: Path) -> dict:
    return tomllib.loads((directory / "pyproject.toml").read_text())


def served_tools(*distributions: str) -> set[str]:
    """The tools the given first-party distributions serve here (this environment has all of them)."""
    done = subprocess.run(
        [sys.executable, "-m", "fal_mcp.cli", "tools", "--json"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=True,
    )
    wanted = set(distributions or FIRST_PARTY)
    return {row["name"] for row in json.loads(done.stdout) if row["distribution"] in wanted}


# --- server.json and the registry ----------------------------------------------------------------


def test_the_vendored_schema_is_the_published_one():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    schema = load_json(SCHEMA)
    assert schema["$id"] == SCHEMA_URL
    jsonschema.Draft7Validator.check_schema(schema)


def registry_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(load_json(SCHEMA), format_checker=jsonschema.FormatChecker())


def test_server_json_is_valid_against_the_registry_schema():
    server = load_json(SERVER_JSON)
    assert server["$schema"] == SCHEMA_URL
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in registry_validator().iter_errors(server)
    ]
    assert errors == []
    # and the validator does hold it to the schema: what the registry refuses fails here too
    for broken in (
        {**server, "description": "x" * 101},
        {**server, "name": "fal-mcp"},
        {**server, "packages": [{**server["packages"][0], "version": "latest"}]},
        {**server, "packages": [{**server["packages"][0], "transport": {"type": "carrier-pigeon"}}]},
    ):
        assert not registry_validator().is_valid(broken)


def test_server_json_runs_the_pypi_distribution_with_a_secret_key():
    server = load_json(SERVER_JSON)
    (package,) = server["packages"]
    assert package["registryType"] == "pypi" and package["registryBaseUrl"] == "https://pypi.org"
    assert package["identifier"] == project(ROOT)["project"]["name"] == "fal-mcp"
    # `uvx fal-mcp serve`: a client runs the distribution's own `fal-mcp` command over stdio
    assert package["runtimeHint"] == "uvx" and package["transport"] == {"type": "stdio"}
    assert [argument["value"] for argument in package["packageArguments"]] == ["serve"]
    (key,) = package["environmentVariables"]
    assert key["name"] == "FAL_KEY" and key["isSecret"] is True and key["isRequired"] is True


def test_one_version_everywhere():
    server, manifest = load_json(SERVER_JSON), load_json(MANIFEST)
    versions = {
        "packaging/server.json": server["version"],
        "packaging/mcpb/manifest.json": manifest["version"],
    }
    versions |= {f"packaging/server.json {p['identifier']}": p["version"] for p in server["packages"]}
    for name, directory in {"fal-mcp": ".", **FIRST_PARTY}.items():
        metadata = project(ROOT / directory)["project"]
        assert metadata["name"] == name
        versions[f"{directory}/pyproject.toml"] = metadata["version"]
    assert len(set(versions.values())) == 1, versions
    # and the all-in-one distribution's requirements admit that version of each part
    from packaging.requirements import Requirement

    (version,) = set(versions.values())
    for line in project(ROOT)["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.name in FIRST_PARTY:
            assert requirement.specifier.contains(version), line


def test_the_registry_name_is_claimed_in_the_readme_and_names_the_repository():
    """The registry proves the PyPI package is ours by `mcp-name: <name>` in its description (the
    README); the name's GitHub namespace, the repository URLs and the README's git URLs agree."""
    server, manifest = load_json(SERVER_JSON), load_json(MANIFEST)
    readme = (ROOT / "README.md").read_text()
    assert re.findall(r"mcp-name: ([\w.-]+/[\w.-]+)", readme) == [server["name"]]
    owner, repository = re.fullmatch(r"io\.github\.([\w-]+)/([\w.-]+)", server["name"]).groups()
    url = f"https://github.com/{owner}/{repository}"
    assert server["repository"] == {"url": url, "source": "github"}
    assert manifest["repository"] == {"type": "git", "url": url}
    git_urls = set(re.findall(r"git\+https://github\.com/[\w.-]+/[\w.-]+?(?=[#@\s\"]|$)", readme))
    assert git_urls == {f"git+{url}"}


def test_the_root_distribution_installs_from_this_repository():
    """`uvx --from <checkout or git URL> fal-mcp` and `pipx install --backend uv <same>`: the root
    distribution names its parts as sources in this repository (uv), and the command (pipx)."""
    root = project(ROOT)
    sources = root.get("tool", {}).get("uv", {}).get("sources", {})
    assert {name: source.get("path") for name, source in sources.items()} == FIRST_PARTY, (
        "pyproject.toml needs [tool.uv.sources] naming each first-party distribution's directory"
    )
    assert root["project"].get("scripts", {}).get("fal-mcp") == "fal_mcp.cli:main", (
        'pyproject.toml needs [project.scripts] fal-mcp = "fal_mcp.cli:main" (pipx installs only commands '
        "of the distribution it is given)"
    )


# --- the MCP Bundle ------------------------------------------------------------------------------


def launcher():
    spec = importlib.util.spec_from_file_location("fal_mcp_bundle_launcher", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("host_env", "arguments", "left"),
    [
        ({"FAL_KEY": "k-1", "FAL_MCP_BUNDLE_SANDBOX": "false"}, ["serve"], {"FAL_KEY": "k-1"}),
        ({"FAL_KEY": "", "FAL_MCP_BUNDLE_SANDBOX": "true"}, ["serve", "--sandbox"], {}),
        ({"FAL_KEY": "${user_config.fal_key}", "FAL_MCP_BUNDLE_SANDBOX": "1"}, ["serve", "--sandbox"], {}),
        (
            {
                "FAL_KEY": " k-2 ",
                "FAL_MCP_OUTPUT_DIR": "/out",
                "FAL_MCP_ALLOWED_DIRS": "${user_config.allowed_dir}",
            },
            ["serve"],
            {"FAL_KEY": " k-2 ", "FAL_MCP_OUTPUT_DIR": "/out"},
        ),
    ],
)
def test_the_bundle_launcher_drops_empty_settings_and_turns_on_the_sandbox(host_env, arguments, left):
    environ = {"PATH": "/bin", **host_env}
    assert launcher().serve_arguments(environ) == arguments
    assert environ == {"PATH": "/bin", **left}


@pytest.fixture(scope="module")
def mcpb_cli(tmp_path_factory) -> list[str]:
    """The `mcpb` command of @anthropic-ai/mcpb, installed from npm into a temporary directory."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        reason = f"node and npm are needed to run `mcpb validate` (node: {node}, npm: {npm})"
        print(reason)
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("mcpb")
    done = subprocess.run(
        [npm, "install", "--prefix", str(home), "--no-audit", "--no-fund", "--loglevel=error", MCPB_PACKAGE],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [node, str(home / "node_modules" / "@anthropic-ai" / "mcpb" / "dist" / "cli" / "cli.js")]


def build_bundle(out: Path) -> tuple[Path, Path]:
    """scripts/build_mcpb.py into `out`: (the .mcpb, the same unpacked)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_mcpb.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    version = load_json(MANIFEST)["version"]
    bundle = out / f"fal-mcp-{version}.mcpb"
    assert str(bundle) in done.stdout and bundle.is_file()
    return bundle, out / "mcpb"


def test_the_bundle_builds_and_mcpb_validates_it(mcpb_cli, tmp_path):
    def mcpb(*args: str) -> str:
        done = subprocess.run([*mcpb_cli, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"mcpb {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done.stdout

    bundle, stage = build_bundle(tmp_path / "dist")
    assert "Manifest schema validation passes!" in mcpb("validate", str(stage / "manifest.json"))
    assert "Manifest schema validation passes!" in mcpb("validate", str(MANIFEST))  # the template alone
    unpacked = tmp_path / "unpacked"
    mcpb("unpack", str(bundle), str(unpacked))
    assert "Manifest schema validation passes!" in mcpb("validate", str(unpacked))
    assert "fal-mcp" in mcpb("info", str(bundle))

    # the archive is the unpacked directory, file for file
    staged = {path.relative_to(stage).as_posix() for path in stage.rglob("*") if path.is_file()}
    with zipfile.ZipFile(bundle) as archive:
        assert set(archive.namelist()) == staged
        for name in staged:
            assert archive.read(name) == (stage / name).read_bytes(), name
    wheels = sorted(path.name for path in (stage / "wheels").iterdir())
    assert [name.split("-")[0] for name in wheels] == sorted(d.replace("-", "_") for d in FIRST_PARTY)

    manifest = load_json(stage / "manifest.json")
    template = load_json(MANIFEST)
    assert {key: value for key, value in manifest.items() if key not in ("icon", "tools")} == template
    assert manifest["manifest_version"] == "0.4"
    server = manifest["server"]
    assert server["type"] == "uv" and (stage / server["entry_point"]).is_file()
    assert server["mcp_config"]["command"] == "uv"
    assert (
        "${__dirname}" in server["mcp_config"]["args"]
        and server["entry_point"] in server["mcp_config"]["args"]
    )
    env = server["mcp_config"]["env"]
    assert env["FAL_KEY"] == "${user_config.fal_key}"
    fal_key = manifest["user_config"]["fal_key"]
    assert fal_key["type"] == "string" and fal_key["sensitive"] is True
    referenced = {m for value in env.values() for m in re.findall(r"\$\{user_config\.(\w+)\}", value)}
    assert referenced == set(manifest["user_config"])
    assert {tool["name"] for tool in manifest["tools"]} == served_tools()
    # the bundle's project installs exactly the bundled wheels
    bundled = tomllib.loads((stage / "pyproject.toml").read_text())
    assert bundled["project"]["dependencies"] == [f"{d}=={template['version']}" for d in FIRST_PARTY]
    sources = bundled["tool"]["uv"]["sources"]
    assert sorted(Path(source["path"]).name for source in sources.values()) == wheels
    assert (stage / "src" / "server.py").read_bytes() == LAUNCHER.read_bytes()


# --- real installs (slow) ------------------------------------------------------------------------


class Installers:
    """uv and pipx from PyPI in a scratch virtual environment, with every cache and install location
    under one temporary directory."""

    def __init__(self, home: Path):
        self.home = home
        environment = home / "installers"
        venv.EnvBuilder(with_pip=True).create(environment)
        self.bin = environment / ("Scripts" if os.name == "nt" else "bin")
        done = subprocess.run(
            [
                str(self.bin / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "uv",
                "pipx",
            ],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        self.env = clean_env(
            {
                "PATH": os.pathsep.join([str(self.bin), os.environ.get("PATH", "")]),
                "UV_CACHE_DIR": str(home / "uv-cache"),
                "UV_TOOL_DIR": str(home / "uv-tools"),
                "UV_TOOL_BIN_DIR": str(home / "uv-bin"),
                "UV_PYTHON": sys.executable,
                "UV_PYTHON_DOWNLOADS": "never",
            }
        )
        self.env.pop("VIRTUAL_ENV", None)

    def run(self, *command: str | Path, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [str(part) for part in command],
            capture_output=True,
            text=True,
            env=env or self.env,
            timeout=INSTALL_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}{done.stderr[-5000:]}"
        return done.stdout

    def pipx_env(self, name: str) -> dict[str, str]:
        home = self.home / f"pipx-{name}"
        return {
            **self.env,
            "PIPX_HOME": str(home),
            "PIPX_BIN_DIR": str(home / "bin"),
            "PIPX_MAN_DIR": str(home / "man"),
        }


@pytest.fixture(scope="module")
def installers(tmp_path_factory) -> Installers:
    return Installers(tmp_path_factory.mktemp("installers"))


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of this working tree (the files git tracks or would track), also a git repository with
    one commit holding them, for `git+file://` URLs."""
    tree = tmp_path_factory.mktemp("checkout") / "fal-mcp"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # not one deleted in the working tree
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the working tree"]):
        subprocess.run([*git, *command], cwd=tree, check=True, capture_output=True)
    return tree


async def talk_mcp(
    command: list[str], env: dict[str, str], call: bool = True
) -> tuple[object, set[str], object]:
    """initialize and tools/list over stdio; with `call`, generate_image too: (server info, tool names,
    the call's result)."""
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=command[0], args=command[1:], env=env)
    with anyio.fail_after(300):
        async with Client(params) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            result = None
            if call:
                result = await client.call_tool(
                    "generate_image", {"prompt": "a lighthouse at dawn", "seed": 7}
                )
            return client.server_info, tools, result


def check_installed(command: list[str], env: dict[str, str], packs: tuple[str, ...] = ()) -> None:
    """`command` is an installed `fal-mcp`: it lists the expected tools, and `serve --sandbox` answers
    MCP with them and generates an image on the offline sandbox."""
    expected = served_tools(*packs)
    listed = subprocess.run(
        [*command, "tools", "--json"], capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT
    )
    assert listed.returncode == 0, listed.stderr[-5000:]
    assert {row["name"] for row in json.loads(listed.stdout)} == expected
    info, tools, result = anyio.run(talk_mcp, [*command, "serve", "--sandbox"], env)
    assert info.name == "fal-mcp" and info.version == load_json(MANIFEST)["version"]
    assert tools == expected
    assert not result.is_error, result.content[0].text
    assert result.structured_content["files"][0]["url"].startswith("http://127.0.0.1:")


@pytest.mark.slow
@pytest.mark.parametrize("source", ["checkout", "git"])
def test_uvx_runs_the_whole_server_from_a_checkout_or_git(installers, checkout, source):
    """`uvx --from . fal-mcp serve` and `uvx --from git+<url> fal-mcp serve`: the core, the four packs
    and the sandbox, in one step."""
    where = str(checkout) if source == "checkout" else f"git+file://{checkout.as_posix()}"
    check_installed([str(installers.bin / "uvx"), "--from", where, "fal-mcp"], installers.env)


@pytest.mark.slow
def test_uvx_with_chosen_packs(installers, checkout):
    command = [
        *(str(installers.bin / "uvx"), "--from", str(checkout / "core")),
        *("--with", str(checkout / "sandbox"), "--with", str(checkout / "plugins" / "image"), "fal-mcp"),
    ]
    check_installed(command, installers.env, packs=("fal-mcp-core", "fal-mcp-image"))


@pytest.mark.slow
def test_pipx_with_its_uv_backend_installs_the_checkout(installers, checkout):
    env = installers.pipx_env("uv")
    installers.run(installers.bin / "pipx", "install", "--backend", "uv", checkout, env=env)
    check_installed([str(Path(env["PIPX_BIN_DIR"]) / "fal-mcp")], env)


@pytest.mark.slow
def test_pipx_with_pip_installs_the_core_then_injects_the_rest(installers, checkout):
    env = installers.pipx_env("pip")
    pipx = installers.bin / "pipx"
    installers.run(pipx, "install", "--backend", "pip", checkout / "core", env=env)
    parts = [checkout / directory for name, directory in FIRST_PARTY.items() if name != "fal-mcp-core"]
    installers.run(pipx, "inject", "fal-mcp-core", *parts, env=env)
    check_installed([str(Path(env["PIPX_BIN_DIR"]) / "fal-mcp")], env)


@pytest.mark.slow
def test_the_bundle_runs_as_its_manifest_tells_the_host(installers, thread_sandbox, tmp_path):
    """The .mcpb unpacked as a host unpacks it, and started as its manifest says (`uv run` in it, the
    user's settings as environment variables): offline with the sandbox switch, and with a key, which
    reaches the server as FAL_KEY (here against a sandbox standing in for fal.ai)."""
    bundle, _ = build_bundle(tmp_path / "dist")
    unpacked = tmp_path / "installed-extension"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(unpacked)
    config = load_json(unpacked / "manifest.json")["server"]["mcp_config"]
    uv = shutil.which(config["command"], path=installers.env["PATH"])
    assert uv is not None and Path(uv).parent == installers.bin

    def host(user_config: dict[str, str], extra_env: dict[str, str] | None = None):
        def expand(value: str) -> str:
            value = value.replace("${__dirname}", str(unpacked))
            for name, setting in user_config.items():
                value = value.replace(f"${{user_config.{name}}}", setting)
            return value

        env = {**installers.env, **(extra_env or {})}
        env |= {name: expand(value) for name, value in config["env"].items()}
        return anyio.run(talk_mcp, [uv, *map(expand, config["args"])], env)

    everything = served_tools()
    info, tools, result = host({"fal_key": "", "offline_sandbox": "true", "output_dir": ""})
    assert info.name == "fal-mcp" and tools == everything
    assert not result.is_error, result.content[0].text

    stand_in = {name: value for name, value in thread_sandbox.env().items() if name != "FAL_KEY"}
    settings = {"offline_sandbox": "false", "output_dir": "", "allowed_dir": ""}
    _, tools, result = host({"fal_key": "bundle-test-key", **settings}, stand_in)
    assert tools == everything
    assert not result.is_error, result.content[0].text
    _, _, result = host({"fal_key": "", **settings}, stand_in)
    assert result.is_error and "No fal API key is configured" in result.content[0].text
