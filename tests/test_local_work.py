"""Local work stays local: compose_images and resize_image's crop and pad read local paths and data: URIs
here (LocalMediaUrl, ToolContext.read_media) and never upload them; only their result goes to fal
storage, to return its URL. resize_image's extend, which sends its input to fal's outpainting, still
uploads it, before the call is recorded as a job. A bad input's error names what the user gave."""

from __future__ import annotations

import base64
import io
import os
from collections import Counter

import pytest
from PIL import Image

from .conftest import count_routes, free_port, tool_table_for

pytestmark = pytest.mark.anyio


def png(size=(300, 200), color=(40, 90, 160), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


BASE, LOGO, PHOTO = png((400, 300), (0, 0, 255)), png((100, 50), (255, 0, 0, 128), "RGBA"), png()


@pytest.fixture
def files(tmp_path):
    """allowed/ (the operator's directory, with sub/) beside a secret outside it."""
    allowed = tmp_path / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "base.png").write_bytes(BASE)
    (allowed / "logo.png").write_bytes(LOGO)
    (allowed / "photo.png").write_bytes(PHOTO)
    (allowed / "sub" / "inner.png").write_bytes(PHOTO)
    (allowed / "notes.png").write_text("not an image at all")
    (tmp_path / "secret.png").write_bytes(PHOTO)
    return tmp_path


@pytest.fixture
async def table(sandbox, registry, files):
    """Previews off: the only download a local tool makes is the core's preview of its own result."""
    sandbox.state.set_config(job_seconds=0.01)
    settings = {"FAL_MCP_ALLOWED_DIRS": str(files / "allowed"), "FAL_MCP_INLINE_PREVIEWS": "0"}
    async with tool_table_for(sandbox, registry, **settings) as table:
        yield table


def stored(sandbox) -> list[bytes]:
    return [file.data for file in sandbox.state.storage._files.values()]


CROP = {"target_format": "instagram_post", "mode": "crop"}
PAD = {"target_format": "tiktok", "mode": "pad"}
LOCAL_WORK = {
    "compose_images, two paths": (
        "compose_images",
        {"base_image_url": "base.png", "overlay_image_url": "logo.png"},
        (400, 300),
    ),
    "compose_images, two data URIs": (
        "compose_images",
        {"base_image_url": data_uri(BASE), "overlay_image_url": data_uri(LOGO)},
        (400, 300),
    ),
    "compose_images, an absolute path and a data URI": (
        "compose_images",
        {"base_image_url": "{allowed}/base.png", "overlay_image_url": data_uri(LOGO)},
        (400, 300),
    ),
    "resize_image crop, a path": ("resize_image", {"image_url": "photo.png", **CROP}, (1080, 1080)),
    "resize_image crop, a data URI": ("resize_image", {"image_url": data_uri(PHOTO), **CROP}, (1080, 1080)),
    "resize_image pad, a path": ("resize_image", {"image_url": "photo.png", **PAD}, (1080, 1920)),
    "resize_image pad, a data URI": ("resize_image", {"image_url": data_uri(PHOTO), **PAD}, (1080, 1920)),
}


def arguments_of(case: str, files) -> tuple[str, dict, tuple[int, int]]:
    tool, arguments, size = LOCAL_WORK[case]
    filled = {key: value.format(allowed=files / "allowed") for key, value in arguments.items()}
    return tool, filled, size


@pytest.mark.parametrize("case", list(LOCAL_WORK))
async def test_local_inputs_are_never_uploaded_only_the_result_is(table, sandbox, files, case):
    tool, arguments, size = arguments_of(case, files)
    result = await table.call(tool, arguments)
    assert not result.is_error, result.content[0].text
    routes = Counter(request["route"] for request in sandbox.state.requests)
    # One upload (and the storage token it needs): the result. No input uploaded, none downloaded back.
    assert count_routes(sandbox, "upload", "multipart") == 1, routes
    assert set(routes) <= {"token", "upload"}, routes
    (only,) = stored(sandbox)
    assert only not in (BASE, LOGO, PHOTO)
    assert Image.open(io.BytesIO(only)).size == size
    assert result.structured_content["files"][0]["url"].startswith(sandbox.base_url)


@pytest.mark.parametrize("case", list(LOCAL_WORK))
async def test_local_work_calls_no_fal_endpoint(sandbox, registry, files, case):
    """fal's queue, run and platform hosts pointing nowhere: local work still works. Only fal storage,
    which the result goes to, must be reachable."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = {
        "FAL_MCP_ALLOWED_DIRS": str(files / "allowed"),
        "FAL_MCP_QUEUE_URL": nowhere,
        "FAL_MCP_RUN_URL": nowhere,
        "FAL_MCP_PLATFORM_URL": nowhere,
    }
    tool, arguments, size = arguments_of(case, files)
    async with tool_table_for(sandbox, registry, **settings) as table:
        result = await table.call(tool, arguments)
    assert not result.is_error, result.content[0].text
    file = result.structured_content["files"][0]
    assert (file["width"], file["height"]) == size


BAD_INPUTS = {
    # value, what the error says (with the value as given, never a CDN URL)
    "outside": ("../secret.png", "'../secret.png' is outside the allowed directories"),
    "missing": ("missing.png", "'missing.png' is not a file"),
    "not an image": ("notes.png", "could not read the image 'notes.png': it is not an image PIL can read"),
    "hidden": (".hidden.png", "'.hidden.png' is or is inside a hidden file"),
    "broken data URI": ("data:image/png;base64,%%%", "the data: URI's base64 payload is malformed"),
    "data URI of no image": (
        "data:image/png;base64," + base64.b64encode(b"hello").decode(),
        "could not read the image in the data: URI: it is not an image PIL can read",
    ),
}
TOOLS_AND_FIELDS = [
    ("compose_images", "base_image_url", {"overlay_image_url": "logo.png"}),
    ("compose_images", "overlay_image_url", {"base_image_url": "base.png"}),
    ("resize_image", "image_url", CROP),
    ("resize_image", "image_url", PAD),
]


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
@pytest.mark.parametrize(
    ("tool", "field", "others"),
    TOOLS_AND_FIELDS,
    ids=[f"{t}.{f}.{o.get('mode', '')}" for t, f, o in TOOLS_AND_FIELDS],
)
async def test_a_bad_local_input_is_named_as_given(table, sandbox, tool, field, others, bad):
    value, expected = BAD_INPUTS[bad]
    result = await table.call(tool, {**others, field: value})
    text = result.content[0].text
    assert result.is_error and f"{field}: {expected}" in text, text
    assert "/cdn/" not in text and sandbox.base_url not in text, text
    assert sandbox.state.requests == []  # nothing uploaded, nothing fetched


async def test_local_inputs_are_read_before_anything_is_downloaded(table, sandbox):
    """A refused local input is refused before a remote one is fetched."""
    remote = await table.gateway.upload(BASE, "image/png", "base.png")
    sandbox.state.requests.clear()
    result = await table.call(
        "compose_images", {"base_image_url": remote, "overlay_image_url": "../secret.png"}
    )
    assert result.is_error and "overlay_image_url: '../secret.png' is outside" in result.content[0].text
    assert sandbox.state.requests == []
    # and a remote input is still fetched, with the core's checks, next to a local one
    result = await table.call("compose_images", {"base_image_url": remote, "overlay_image_url": "logo.png"})
    assert not result.is_error, result.content[0].text
    assert count_routes(sandbox, "download") == 1 and count_routes(sandbox, "upload") == 1


async def test_client_roots_narrow_local_work_too(table, sandbox, files):
    async def roots():
        return [str(files / "allowed" / "sub")]

    inside, beside = str(files / "allowed" / "sub" / "inner.png"), str(files / "allowed" / "photo.png")
    refused = await table.call("resize_image", {"image_url": beside, **CROP}, allowed_dirs=roots)
    text = refused.content[0].text
    assert refused.is_error and f"image_url: '{beside}' is outside the allowed directories" in text, text
    done = await table.call("resize_image", {"image_url": inside, **CROP}, allowed_dirs=roots)
    assert not done.is_error, done.content[0].text


async def test_the_upload_size_limit_holds_for_local_work(sandbox, registry, files):
    """FAL_MCP_MAX_UPLOAD_MB bounds what is read here as it bounds what is uploaded."""
    noise = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(noise, "PNG")
    (files / "allowed" / "noise.png").write_bytes(noise.getvalue())  # some 12 KB: over 0.01 MB
    settings = {"FAL_MCP_ALLOWED_DIRS": str(files / "allowed"), "FAL_MCP_MAX_UPLOAD_MB": "0.01"}
    async with tool_table_for(sandbox, registry, **settings) as table:
        for value in ("noise.png", data_uri(noise.getvalue())):
            result = await table.call("resize_image", {"image_url": value, **CROP})
            text = result.content[0].text
            assert result.is_error and "image_url: " in text and "more than the limit of 10485" in text, text
    assert sandbox.state.requests == []


async def test_extend_still_uploads_its_input(table, sandbox):
    result = await table.call(
        "resize_image", {"image_url": "photo.png", "target_format": "instagram_post", "mode": "extend"}
    )
    assert not result.is_error, result.content[0].text
    sent = sandbox.state.submissions[-1]["input"]["image_url"]
    assert sent.startswith(sandbox.base_url)  # fal's outpainting gets a fal storage URL...
    assert PHOTO in stored(sandbox)  # ... of the local file itself
    assert count_routes(sandbox, "upload") == 2  # the input, then the result


async def test_jobs_record_what_they_need_to_finish_again(table, sandbox, files):
    """submit_job records a job before its handler runs: extend's input is uploaded first, so the job is
    recorded with the URL fal got (finished again after a restart without reading the path again); a
    local job is recorded with the path as given, and uploads nothing but its result."""
    extend = {"image_url": "photo.png", "target_format": "instagram_post", "mode": "extend"}
    crop = {"image_url": "photo.png", **CROP}
    records = {}
    for name, arguments in (("extend", extend), ("crop", crop)):
        before = count_routes(sandbox, "upload")
        submitted = await table.call("submit_job", {"tool": "resize_image", "arguments": arguments})
        assert not submitted.is_error, submitted.content[0].text
        job_id = submitted.structured_content["job_id"]
        checked = await table.call("check_job", {"job_id": job_id, "wait_seconds": 20})
        text = checked.content[0].text
        assert not checked.is_error and text.startswith("Job done."), text
        record = await table.store.get(job_id)
        assert record.status == "done"
        records[name] = record.arguments
        records[name + " uploads"] = count_routes(sandbox, "upload") - before
    assert records["extend"]["image_url"].startswith(sandbox.base_url)
    assert records["extend uploads"] == 2
    assert records["crop"]["image_url"] == "photo.png" and records["crop uploads"] == 1
