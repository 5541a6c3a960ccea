"""Copy fal's published schemas of the endpoints the installed packs register into those packs.

    .venv/bin/python scripts/vendor_schemas.py ../shared/reference/fal-schemas \
        [--pack examples/fal-mcp-speech/src/fal_mcp_speech ...]

SNAPSHOT is a folder of fal endpoint schemas (one `<endpoint id with / as __>.json` per endpoint with
`endpoint_id, source, source_symbols, input, output`, and an INDEX.json saying where each came from and
how it differs from fal-js HEAD). Every model registered by an installed pack (and by each `--pack`,
a pack's package folder that is not installed, such as the example pack) gets its endpoint's schema
written to `<package>/schemas/`, as the core reads it (fal_mcp/endpoint_schemas.py): the snapshot's
source, the date of that source, its staleness notes, and what was followed where the snapshot is
older than HEAD. Files of endpoints no longer registered are removed. A maintainer's tool: never run
by the tests, and nothing reads the snapshot at run time.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from importlib import import_module
from pathlib import Path

HEAD = "fal-js libs/client/src/types/endpoints.ts at 381105e (2026-08-02)"

# Where fal-js HEAD is newer than the snapshot for a registered endpoint: HEAD is followed (it is what
# fal serves now). INDEX.json lists which fields changed but not their types: those are read from
# HEAD's TypeScript types by hand and kept here, so re-vendoring gives the same files.
FOLLOW_HEAD: dict[str, dict] = {
    "fal-ai/aura-sr": {
        "rename": {"upscaling_factor": "upscale_factor"},
        "note": "HEAD renamed upscaling_factor to upscale_factor (AuraSrInput: `upscale_factor?: number`, "
        "default 4, 'more coming soon'); the snapshot's only value, 4, is kept as its const.",
    },
    "fal-ai/image-apps-v2/outpaint": {
        "add": {
            "seed": {
                "title": "Seed",
                "type": "integer",
                "description": "The same seed and the same "
                "prompt given to the same version of the model will output the same image every "
                "time.",
            }
        },
        "add_output": {"seed": {"title": "Seed", "type": "integer"}},
        "note": "HEAD added seed (ImageAppsV2OutpaintInput: `seed?: number`) to the input and the "
        "output. HEAD's prompt has no length limit (TS types have none); the snapshot's maxLength "
        "500 is kept.",
    },
    "fal-ai/birefnet/v2": {
        "add": {
            "mask_only": {
                "title": "Mask Only",
                "type": "boolean",
                "description": "Whether to return "
                "only the segmentation mask without applying it to the image.",
            }
        },
        "note": "HEAD added mask_only (BirefnetV2Input: `mask_only?: boolean`).",
    },
    "fal-ai/flux-lora/inpainting": {
        "add": {
            "acceleration": {
                "title": "Acceleration",
                "type": "string",
                "enum": ["none", "regular"],
                "description": "Acceleration level for image generation.",
                "x-head-default": "none",
            }
        },
        "note": 'HEAD added acceleration (`"none" | "regular"`, default none); HEAD\'s type is the shared '
        "alias InpaintInput.",
    },
}

# Why a registered endpoint is what it is, where the snapshot alone does not say.
NOTES = {
    "CassetteAI/music-generator": "The snapshot spells the id cassetteai/music-generator (fal-js zod); HEAD "
    "and fal spell it CassetteAI/music-generator, which is what is called.",
    "decart/lucy-edit/pro": "Replaces decart/lucy-edit/dev, which is gone from fal-js HEAD (removed between "
    "9830f25, 2026-04-07, and 381105e); lucy-edit/pro takes the same fields plus "
    "resolution.",
    "fal-ai/kling-video/v2.1/standard/image-to-video": "Takes no tail_image_url (neither the snapshot nor "
    "HEAD lists one): a last frame needs "
    "fal-ai/kling-video/v2.1/pro/image-to-video.",
    "fal-ai/wizper": "Also serves the alias whisper: fal-ai/whisper is gone from fal-js HEAD (removed "
    "between 9830f25 and 381105e); wizper is fal's Whisper v3 and detects the language "
    "when language is null.",
}


def null_for_unknown(node) -> int:
    """hey-api writes a nullable field as `anyOf: [<type>, {}]` (its `unknown`), which would let any value
    through; fal's OpenAPI has null there (e.g. wizper's language: null means detect it). Each `{}`
    branch of an anyOf becomes `{"type": "null"}`; returns how many were."""
    count = 0
    if isinstance(node, dict):
        options = node.get("anyOf")
        if isinstance(options, list):
            for number, option in enumerate(options):
                if option == {}:
                    options[number] = {"type": "null"}
                    count += 1
        count += sum(null_for_unknown(value) for value in node.values())
    elif isinstance(node, list):
        count += sum(null_for_unknown(value) for value in node)
    return count


def snapshot_date(source_text: str) -> str:
    found = re.search(r"\((\d{4}-\d{2}-\d{2})\)", source_text)
    if not found:
        raise SystemExit(f"no date in the snapshot's source description {source_text!r}")
    return found.group(1)


def follow_head(endpoint_id: str, document: dict, entry: dict) -> list[str]:
    """Apply HEAD's changes to the copied schemas; the notes saying what was done."""
    changes = entry.get("head_changes") or {}
    follow = FOLLOW_HEAD.get(endpoint_id, {})
    notes = [follow["note"]] if "note" in follow else []
    for part, prefix in (("input", "input"), ("output", "output")):
        schema = document[part]
        properties, required = schema.setdefault("properties", {}), schema.get("required", [])
        for old, new in (follow.get("rename", {}) if part == "input" else {}).items():
            properties[new] = properties.pop(old)
            schema["required"] = required = [new if name == old else name for name in required]
        added = follow.get("add" if part == "input" else "add_output", {})
        properties.update(copy.deepcopy(added))
        renamed = set(follow.get("rename", {})) if part == "input" else set()
        for name in changes.get(f"{prefix}_fields_removed", ()):
            if name in properties and name not in renamed:
                del properties[name]
                schema["required"] = required = [n for n in required if n != name]
                notes.append(f"{name} was dropped from the {part}: HEAD no longer lists it.")
        for name in changes.get(f"{prefix}_fields_added", ()):
            if name not in properties:
                notes.append(
                    f"HEAD also lists {part} field {name}, not added here (its type is not recorded "
                    "in FOLLOW_HEAD of scripts/vendor_schemas.py)."
                )
    return notes


def vendored(snapshot: Path, index: dict, endpoint_id: str) -> dict:
    endpoints = index["endpoints"]
    by_lower = {key.lower(): key for key in endpoints}
    key = endpoint_id if endpoint_id in endpoints else by_lower.get(endpoint_id.lower())
    if key is None:
        raise LookupError(endpoint_id)
    entry = endpoints[key]
    original = json.loads((snapshot / entry["file"]).read_text(encoding="utf-8"))
    source_text = index["sources"][entry["source"]]
    document = {
        "endpoint_id": endpoint_id,
        "source": original["source"],
        "source_symbols": original.get("source_symbols"),
        "date": snapshot_date(source_text),
        "snapshot": f"{entry['source']}: {source_text}",
    }
    if key != endpoint_id:
        document["snapshot_endpoint_id"] = key
    for name in (
        "category",
        "category_inferred",
        "in_head",
        "head_id",
        "head_changes",
        "input_alias_of",
        "caveats",
    ):
        value = entry.get(name, original.get(name))
        if value is not None:
            document[name] = value
    document["input"], document["output"] = original["input"], original["output"]
    notes = follow_head(endpoint_id, document, entry)
    if null_for_unknown(document["input"]) + null_for_unknown(document["output"]):
        notes.append(
            "The snapshot's `anyOf: [..., {}]` (hey-api's unknown) is written as `anyOf: [..., "
            "{type: null}]`: a nullable field in fal's OpenAPI."
        )
    if endpoint_id in NOTES:
        notes.append(NOTES[endpoint_id])
    if entry.get("in_head") is False:
        notes.append(f"Not in {HEAD}: check that fal still serves it.")
    if notes:
        document["note"] = " ".join(notes)
        if endpoint_id in FOLLOW_HEAD or entry.get("head_changes"):
            document["followed"] = HEAD
    # The schemas last, so the provenance reads first.
    return {k: document[k] for k in sorted(document, key=lambda k: k in ("input", "output"))}


def registered_models(extra_packs: list[str]) -> list:
    from fal_mcp.plugins import load_plugins

    registry = load_plugins()
    failed = [f"{pack.name}: {pack.error}" for pack in registry.packs if pack.status == "failed"]
    if failed:
        raise SystemExit("packs that failed to load (their endpoints are unknown): " + "; ".join(failed))
    models = list(registry.models.values())
    for folder in extra_packs:
        path = Path(folder).resolve()
        sys.path.insert(0, str(path.parent))
        models += list(import_module(path.name).register_models())
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("snapshot", type=Path, help="folder of fal endpoint schemas with INDEX.json")
    parser.add_argument(
        "--pack",
        action="append",
        default=[],
        help="a pack's package folder that is not installed (e.g. the example pack's)",
    )
    options = parser.parse_args()
    index = json.loads((options.snapshot / "INDEX.json").read_text(encoding="utf-8"))
    by_package: dict[str, set[str]] = {}
    for model in registered_models(options.pack):
        by_package.setdefault(model.package, set()).add(model.endpoint_id)
    missing = []
    for package, endpoint_ids in sorted(by_package.items()):
        folder = Path(import_module(package).__file__).parent / "schemas"
        folder.mkdir(exist_ok=True)
        written = set()
        for endpoint_id in sorted(endpoint_ids):
            from fal_mcp.endpoint_schemas import schema_file_name

            try:
                document = vendored(options.snapshot, index, endpoint_id)
            except LookupError:
                missing.append(f"{package}: {endpoint_id}")
                continue
            name = schema_file_name(endpoint_id)
            text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
            (folder / name).write_text(text, encoding="utf-8")
            written.add(name)
        for stale in sorted(set(p.name for p in folder.glob("*.json")) - written):
            (folder / stale).unlink()
            print(f"removed {package}/schemas/{stale}: no model registers it any more")
        print(f"{package}: {len(written)} schemas")
    if missing:
        raise SystemExit(
            "not in the snapshot (vendor these by hand, with a note saying where they come "
            "from): " + ", ".join(missing)
        )


if __name__ == "__main__":
    main()
