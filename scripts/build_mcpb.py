#!/usr/bin/env python3
"""Build the MCP Bundle (.mcpb) of fal-mcp: the core, the four packs and the offline sandbox.

    .venv/bin/python scripts/build_mcpb.py             # dist/fal-mcp-<version>.mcpb, and dist/mcpb/ unpacked
    .venv/bin/python scripts/build_mcpb.py --out DIR

Run it with the project's environment (`python3 dev.py setup` makes .venv): it builds the wheels with
its pip and setuptools, and lists the bundle's tools by loading those wheels with its dependencies.

The bundle (manifest_version 0.4, server type `uv`) carries the six first-party wheels and a
pyproject.toml that names them: the host runs `uv run --directory <bundle> src/server.py`, uv installs
the wheels and their dependencies from PyPI, and src/server.py (packaging/mcpb/server.py) starts
`fal-mcp serve`, with `--sandbox` when the user turned the offline sandbox on. The user's fal key
reaches the server as FAL_KEY (manifest.json, user_config.fal_key).

Check it with `npx -y @anthropic-ai/mcpb validate dist/mcpb/manifest.json` (tests/test_packaging.py
does, and runs the unpacked bundle through uv as the host would).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging" / "mcpb"
# The first-party distributions the bundle carries, by source directory.
DISTRIBUTIONS = {
    "fal-mcp-core": "core",
    "fal-mcp-sandbox": "sandbox",
    "fal-mcp-image": "plugins/image",
    "fal-mcp-video": "plugins/video",
    "fal-mcp-audio": "plugins/audio",
    "fal-mcp-utility": "plugins/utility",
}
PACKS = {"fal-mcp-core", "fal-mcp-image", "fal-mcp-video", "fal-mcp-audio", "fal-mcp-utility"}
# Every timestamp in the wheels and the bundle: the same sources give the same bundle, byte for byte.
ZIP_DATE = (2020, 1, 1, 0, 0, 0)
SOURCE_DATE_EPOCH = "1577836800"  # 2020-01-01T00:00:00Z


class BuildError(Exception):
    pass


def project_version(directory: Path) -> tuple[str, str]:
    project = tomllib.loads((directory / "pyproject.toml").read_text())["project"]
    return project["name"], project["version"]


def check_versions(manifest: dict) -> str:
    """The one version of the release: the manifest's, every first-party distribution's and the root's."""
    versions = {"packaging/mcpb/manifest.json": manifest["version"]}
    for name, directory in {"fal-mcp": ".", **DISTRIBUTIONS}.items():
        found, version = project_version(ROOT / directory)
        if found != name:
            raise BuildError(f"{directory}/pyproject.toml names {found!r}, expected {name!r}")
        versions[f"{directory}/pyproject.toml"] = version
    if len(set(versions.values())) != 1:
        listing = "\n".join(f"  {where}: {version}" for where, version in versions.items())
        raise BuildError(f"the versions disagree:\n{listing}")
    return manifest["version"]


def build_wheels(work: Path) -> list[Path]:
    """The six wheels, built by this interpreter's pip from copies of the sources (a build writes
    build/ and *.egg-info beside them)."""
    copies = []
    for name, directory in DISTRIBUTIONS.items():
        copies.append(work / "src" / name)
        shutil.copytree(
            ROOT / directory,
            copies[-1],
            ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"),
        )
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    wheels = work / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps"]
    done = subprocess.run(
        [*command, *isolation, "--wheel-dir", str(wheels), *map(str, copies)],
        capture_output=True,
        text=True,
        env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH},  # the wheels' timestamps
    )
    if done.returncode:
        raise BuildError(f"pip wheel failed:\n{done.stdout}{done.stderr}")
    built = sorted(wheels.glob("*.whl"))
    names = {path.name.split("-")[0].replace("_", "-") for path in built}
    if names != set(DISTRIBUTIONS) or any(not path.name.endswith("-py3-none-any.whl") for path in built):
        raise BuildError(f"expected one pure-Python wheel of each of {sorted(DISTRIBUTIONS)}, got {built}")
    return built


def bundled_tools(wheels: list[Path], work: Path, version: str) -> list[dict[str, str]]:
    """The tools the bundle serves, listed by the server loaded from the built wheels (their
    dependencies from this interpreter): also proves the wheels carry their entry points."""
    target = work / "installed"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *("--no-deps", "--target", str(target), *map(str, wheels)),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise BuildError(f"installing the wheels to list their tools failed:\n{done.stderr}")
    env = {name: value for name, value in os.environ.items() if not name.startswith("FAL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["FAL_MCP_STORE"] = "sqlite:///:memory:"

    def cli(*args: str) -> list[dict]:
        done = subprocess.run(
            [sys.executable, "-m", "fal_mcp.cli", *args, "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=work,
        )
        if done.returncode:
            raise BuildError(
                f"`fal-mcp {' '.join(args)}` from the built wheels failed (run this script with the "
                f"project's .venv, which has their dependencies):\n{done.stderr}"
            )
        return json.loads(done.stdout)

    where = subprocess.run(
        [sys.executable, "-c", "import fal_mcp, fal_mcp_sandbox; print(fal_mcp.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
    )
    if where.returncode or not Path(where.stdout.strip()).is_relative_to(target):
        raise BuildError(f"fal_mcp did not load from the built wheels: {where.stdout}{where.stderr}")
    packs = {row["distribution"]: row for row in cli("plugins")}
    for distribution in sorted(PACKS):
        row = packs.get(distribution)
        if row is None or row["status"] != "active" or row["version"] != version:
            raise BuildError(f"{distribution} {version} is not active in the built wheels: {row}")
    return [
        {"name": row["name"], "description": row["title"]}
        for row in cli("tools")
        if row["distribution"] in PACKS
    ]


def bundle_pyproject(version: str, wheels: list[Path]) -> str:
    """The bundle's Python project: its dependencies are the bundled wheels (uv installs them from the
    bundle, and their own dependencies from PyPI)."""
    by_name = {path.name.split("-")[0].replace("_", "-"): path.name for path in wheels}
    dependencies = "".join(f'    "{name}=={version}",\n' for name in DISTRIBUTIONS)
    sources = "".join(f'{name} = {{ path = "wheels/{by_name[name]}" }}\n' for name in DISTRIBUTIONS)
    return (
        "# The MCP Bundle's Python project (made by scripts/build_mcpb.py): the host's `uv run` installs\n"
        "# the bundled fal-mcp wheels and, from PyPI, their dependencies into .venv here.\n"
        "[project]\n"
        'name = "fal-mcp-bundle"\n'
        f'version = "{version}"\n'
        'description = "fal-mcp as an MCP Bundle: the core, the image, video, audio and utility packs, '
        'the offline sandbox"\n'
        'requires-python = ">=3.10"\n'
        f"dependencies = [\n{dependencies}]\n"
        "\n"
        "[tool.uv]\n"
        "package = false\n"
        "\n"
        "[tool.uv.sources]\n"
        f"{sources}"
    )


def draw_icon(path: Path) -> None:
    """A 512x512 PNG: three overlapping discs (image, video, audio) on a dark rounded square."""
    from PIL import Image, ImageDraw

    size = 512
    icon = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((0, 0, size - 1, size - 1), radius=112, fill=(24, 20, 44, 255))
    for (x, y), colour in zip(
        ((196, 218), (316, 218), (256, 322)),
        ((236, 72, 153, 200), (99, 102, 241, 200), (250, 204, 21, 200)),
        strict=True,
    ):
        layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        ImageDraw.Draw(layer).ellipse((x - 110, y - 110, x + 110, y + 110), fill=colour)
        icon = Image.alpha_composite(icon, layer)
    icon.save(path, format="PNG", optimize=True)


def write_bundle(stage: Path, bundle: Path) -> None:
    """Zip `stage` into `bundle`: sorted entries, fixed timestamps, regular-file permissions."""
    bundle.unlink(missing_ok=True)
    with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(p for p in stage.rglob("*") if p.is_file()):
            entry = zipfile.ZipInfo(path.relative_to(stage).as_posix(), date_time=ZIP_DATE)
            entry.external_attr = 0o100644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, path.read_bytes())


def build(out: Path) -> Path:
    manifest = json.loads((PACKAGING / "manifest.json").read_text())
    version = check_versions(manifest)
    stage = out / "mcpb"
    with tempfile.TemporaryDirectory(prefix="fal-mcp-mcpb-") as scratch:
        work = Path(scratch)
        wheels = build_wheels(work)
        manifest["icon"] = "icon.png"
        manifest["tools"] = bundled_tools(wheels, work, version)
        if stage.exists():
            shutil.rmtree(stage)
        (stage / "src").mkdir(parents=True)
        (stage / "wheels").mkdir()
        for wheel in wheels:
            shutil.copy2(wheel, stage / "wheels" / wheel.name)
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    (stage / "pyproject.toml").write_text(bundle_pyproject(version, wheels))
    shutil.copy2(PACKAGING / "server.py", stage / "src" / "server.py")
    # For anyone packing dist/mcpb with `mcpb pack` after running it there.
    (stage / ".mcpbignore").write_text(".venv/\nuv.lock\n__pycache__/\n*.pyc\n")
    draw_icon(stage / "icon.png")
    bundle = out / f"fal-mcp-{version}.mcpb"
    write_bundle(stage, bundle)
    return bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output directory (default: dist/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        bundle = build(args.out.resolve())
    except BuildError as exc:
        print(f"build_mcpb: {exc}", file=sys.stderr)
        return 1
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    print(f"{bundle} ({bundle.stat().st_size // 1024} KB, sha256 {digest})")
    print(f"unpacked: {bundle.parent / 'mcpb'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
