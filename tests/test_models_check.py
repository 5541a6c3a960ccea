"""`fal-mcp models check`: each registered model's vendored schema against fal's live OpenAPI (here the
sandbox, made to publish a changed schema for one endpoint and none at all for another)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import replace

from fal_mcp.endpoint_schemas import compare_inputs

from .conftest import server_env


def run_check(sandbox) -> tuple[int, list[dict]]:
    done = subprocess.run(
        [sys.executable, "-m", "fal_mcp.cli", "models", "check", "--json"],
        capture_output=True,
        text=True,
        env=server_env(dict(sandbox.env())),
        timeout=120,
    )
    return done.returncode, json.loads(done.stdout)


def test_an_unchanged_catalogue_is_up_to_date(thread_sandbox):
    code, rows = run_check(thread_sandbox)
    assert code == 0, [row for row in rows if row["status"] != "up to date"]
    assert {row["alias"] for row in rows} >= {"flux_schnell", "kling", "musicgen"}
    assert all(row["status"] == "up to date" for row in rows)


def test_added_removed_and_changed_fields_and_vanished_endpoints_are_reported(thread_sandbox):
    endpoints = thread_sandbox.state.endpoints
    original = dict(endpoints)
    schnell = endpoints["fal-ai/flux/schnell"]
    changed = copy.deepcopy(schnell.input_schema)
    del changed["properties"]["seed"]  # removed
    changed["properties"]["guidance_boost"] = {"type": "number", "minimum": 0}  # added
    changed["properties"]["num_images"]["maximum"] = 8  # changed bound
    changed["properties"]["output_format"]["enum"] = ["jpeg", "png", "webp"]  # changed choices
    changed.setdefault("required", []).append("image_size")  # now required
    try:
        endpoints["fal-ai/flux/schnell"] = replace(schnell, input_schema=changed)
        del endpoints["fal-ai/lyria2"]  # gone from fal
        code, rows = run_check(thread_sandbox)
    finally:
        endpoints.clear()
        endpoints.update(original)
    by_alias = {(row["tool"], row["alias"]): row for row in rows}
    schnell_row = by_alias[("generate_image", "flux_schnell")]
    assert code == 1 and schnell_row["status"] == "changed"
    changes = schnell_row["changes"]
    assert "+ guidance_boost (number)" in changes and "- seed" in changes
    assert any(c.startswith("~ num_images:") and "maximum 4 -> 8" in c for c in changes)
    assert any(c.startswith("~ output_format:") and "webp" in c for c in changes)
    assert any(c.startswith("~ image_size:") and "now required" in c for c in changes)
    assert by_alias[("generate_music", "lyria2")]["status"] == "gone from fal"
    assert by_alias[("generate_image", "flux_dev")]["status"] == "up to date"


def test_compare_inputs_reads_refs_of_the_live_document():
    vendored = {"properties": {"size": {"type": "integer", "maximum": 4}}, "required": ["size"]}
    live_doc = {"components": {"schemas": {"Size": {"type": "integer", "maximum": 4}}}}
    live = {"properties": {"size": {"$ref": "#/components/schemas/Size"}}, "required": ["size"]}
    assert compare_inputs(vendored, live, live_doc) == []
    live_doc["components"]["schemas"]["Size"]["maximum"] = 6
    assert compare_inputs(vendored, live, live_doc) == ["~ size: maximum 4 -> 6"]
