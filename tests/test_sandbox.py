"""Tests of the offline fal sandbox, driven through the real fal_client where possible.

The sandbox knows no model: it serves what the installed packs register, with the schemas they vendor.
Most tests here give it endpoints of their own (ENDPOINTS below, schemas written like fal's), so they
do not depend on what a pack vendors; the last tests check the installed packs' endpoints.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import struct
import subprocess
import sys
import time
import wave

import anyio
import fal_client
import fal_client.client as fal_module
import httpx
import pytest
from jsonschema import Draft202012Validator
from PIL import Image

from fal_mcp_sandbox import Endpoint, Sandbox
from fal_mcp_sandbox.endpoints import installed

KEY = {"Authorization": "Key sandbox-key"}

# --- endpoints of our own, their schemas written the way fal publishes them ----------------------------


def p(type_: str, **kw) -> dict:
    return {"type": type_, **kw}


def obj(required=(), **properties) -> dict:
    return {"type": "object", "properties": properties, "required": list(required)}


FILE = obj(["url"], url=p("string"), content_type=p("string"), file_name=p("string"), file_size=p("integer"))
IMAGE = obj(
    ["url"],
    url=p("string"),
    content_type=p("string", default="image/jpeg"),
    file_name=p("string"),
    file_size=p("integer"),
    width=p("integer"),
    height=p("integer"),
)
PRESETS = ["square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"]
IMAGE_SIZE = {
    "anyOf": [
        obj(width=p("integer", default=512, maximum=14142), height=p("integer", default=512, maximum=14142)),
        p("string", enum=PRESETS),
    ]
}
SEED = {"anyOf": [p("integer"), {}]}
TIMINGS = p("object", additionalProperties=p("number"))
IMAGES_OUT = obj(
    ["prompt", "images", "timings", "has_nsfw_concepts", "seed"],
    prompt=p("string"),
    images=p("array", items=IMAGE),
    timings=TIMINGS,
    has_nsfw_concepts=p("array", items=p("boolean")),
    seed=p("integer"),
)
COMMON = {
    "num_images": p("integer", default=1, minimum=1, maximum=4),
    "output_format": p("string", enum=["jpeg", "png"], **{"x-head-default": "jpeg"}),
    "seed": SEED,
    "sync_mode": p("boolean", default=False),
}


def text_to_image(endpoint_id: str, price: float, **extra) -> Endpoint:
    schema = obj(
        ["prompt"], prompt=p("string"), image_size={**IMAGE_SIZE, "x-head-default": "landscape_4_3"}, **COMMON
    )
    return Endpoint(endpoint_id, schema, IMAGES_OUT, unit_price=price, unit="image", kind="image", **extra)


ENDPOINTS = [
    text_to_image(
        "fal-ai/flux/schnell",
        0.003,
        name="FLUX.1 [schnell]",
        highlighted=True,
        description="FLUX.1 [schnell]: fast, good quality, 1-4 steps",
    ),
    text_to_image("fal-ai/flux/dev", 0.025, name="FLUX.1 [dev]"),
    text_to_image("fal-ai/flux-pro/v1.1", 0.04, name="FLUX1.1 [pro]"),
    Endpoint(
        "fal-ai/flux/dev/image-to-image",
        obj(
            ["prompt", "image_url"],
            prompt=p("string"),
            image_url=p("string"),
            strength=p("number", default=0.95, minimum=0.01, maximum=1),
            **COMMON,
        ),
        IMAGES_OUT,
        unit_price=0.03,
        unit="megapixel",
    ),
    Endpoint(
        "fal-ai/flux-2/edit",
        obj(
            ["prompt", "image_urls"],
            prompt=p("string"),
            image_urls=p("array", items=p("string"), minItems=1),
            image_size=IMAGE_SIZE,
            **COMMON,
        ),
        IMAGES_OUT,
        unit_price=0.025,
        unit="image",
    ),
    Endpoint(
        "fal-ai/birefnet/v2",
        obj(
            ["image_url"],
            image_url=p("string"),
            output_mask=p("boolean", default=False),
            output_format=p("string", enum=["webp", "png", "gif"], **{"x-head-default": "png"}),
        ),
        obj(
            ["image"],
            image={**IMAGE, "description": "Image with background removed"},
            mask_image={**IMAGE, "description": "Mask used to remove the background"},
        ),
        name="BiRefNet v2",
        tags=("background-removal",),
        unit_price=0.001,
        unit="image",
    ),
    Endpoint(
        "fal-ai/clarity-upscaler",
        obj(
            ["image_url"],
            image_url=p("string"),
            upscale_factor=p("number", default=2, minimum=1, maximum=4),
            seed=SEED,
        ),
        obj(["image", "seed", "timings"], image=IMAGE, seed=p("integer"), timings=TIMINGS),
        unit_price=0.03,
        unit="megapixel",
    ),
    Endpoint(
        "fal-ai/aura-sr",
        obj(["image_url"], image_url=p("string"), upscale_factor=p("number", default=4)),
        obj(["image", "timings"], image=IMAGE, timings=TIMINGS),
        unit_price=0.01,
        unit="image",
    ),
    Endpoint(
        "fal-ai/image-apps-v2/outpaint",
        obj(
            ["image_url"],
            image_url=p("string"),
            **{
                f"expand_{side}": p("integer", default=0, minimum=0, maximum=700)
                for side in ("left", "right", "top", "bottom")
            },
        ),
        obj(["images"], images=p("array", items=IMAGE)),
        unit_price=0.035,
        unit="megapixel",
    ),
    Endpoint(
        "fal-ai/kling-video/v2.1/master/text-to-video",
        obj(
            ["prompt"],
            prompt=p("string"),
            duration=p("string", enum=["5", "10"]),
            aspect_ratio=p("string", enum=["16:9", "9:16", "1:1"]),
        ),
        obj(["video"], video=FILE),
        name="Kling 2.1 Master text-to-video",
        unit_price=0.28,
        unit="second",
        kind="video",
        tags=("kling",),
    ),
    Endpoint(
        "fal-ai/kling-video/v2.1/standard/image-to-video",
        obj(
            ["prompt", "image_url"],
            prompt=p("string"),
            image_url=p("string"),
            duration=p("string", enum=["5", "10"]),
        ),
        obj(["video"], video=FILE),
        name="Kling 2.1 Standard image-to-video",
        unit_price=0.056,
        unit="second",
        kind="video",
        tags=("kling",),
    ),
    Endpoint(
        "decart/lucy-edit/dev",
        obj(
            ["prompt", "video_url"],
            prompt=p("string"),
            video_url=p("string"),
            sync_mode=p("boolean", default=True),
        ),
        obj(["video"], video=FILE),
        unit_price=0.04,
        unit="second",
        kind="video",
    ),
    Endpoint(
        "fal-ai/stable-audio",
        obj(["prompt"], prompt=p("string"), seconds_total=p("integer", default=30, minimum=1, maximum=47)),
        obj(["audio_file"], audio_file=FILE),
        unit_price=0.001,
        unit="second",
        kind="audio",
    ),
    Endpoint(
        "fal-ai/kokoro/american-english",
        obj(
            [],
            prompt=p("string", default=""),
            voice=p("string", enum=["af_heart", "am_adam"], default="af_heart"),
            speed=p("number", default=1, minimum=0.1, maximum=5),
        ),
        obj(["audio"], audio={**FILE, "description": "The generated music"}),
        unit_price=0.02,
        unit="1000 characters",
        kind="audio",
    ),
    Endpoint(
        "fal-ai/wizper",
        obj(["audio_url"], audio_url=p("string"), language={"anyOf": [p("string", enum=["en", "fr"]), {}]}),
        obj(
            ["text", "languages", "chunks"],
            text=p("string"),
            languages=p("array", items=p("string")),
            chunks=p("array", items=obj(["text", "timestamp"], text=p("string"), timestamp=p("array"))),
        ),
        unit_price=0.0005,
        unit="second",
        kind="audio",
    ),
]
BY_ID = {endpoint.id: endpoint for endpoint in ENDPOINTS}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def sb():
    async with Sandbox(endpoints=ENDPOINTS, job_seconds=0.1) as sandbox:
        yield sandbox


def point_fal_client_at(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    env = sandbox.env()
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", env["FAL_MCP_QUEUE_URL"] + "/")
    monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", env["FAL_MCP_RUN_URL"] + "/")
    monkeypatch.setattr(fal_module, "REST_URL", env["FAL_MCP_REST_URL"])
    monkeypatch.setattr(fal_module, "CDN_URL", env["FAL_MCP_CDN_URL"])


@pytest.fixture
def fal(sb, monkeypatch, tmp_path):
    monkeypatch.setenv("FAL_HOME_DIR", str(tmp_path))
    point_fal_client_at(sb, monkeypatch)
    return fal_client.AsyncClient(key="sandbox-key")


@pytest.fixture
async def http(sb):
    async with httpx.AsyncClient(base_url=sb.base_url, headers=KEY) as client:
        yield client


def png_bytes(width: int, height: int, colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")
    return buf.getvalue()


async def download(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    response.raise_for_status()
    return response


# --- queue protocol --------------------------------------------------------------------


@pytest.mark.anyio
async def test_queue_positions_then_logs_then_completion(sb, fal):
    # each queue position is held until the test has seen it
    sb.state.set_config(job_seconds=0.3, log_lines=3)
    sb.state.add_fault(outcome="ok", queue_ahead=2, hold_queue=True)
    handle = await fal.submit("fal-ai/flux/schnell", {"prompt": "a lighthouse", "seed": 7})
    events = []
    async for event in handle.iter_events(with_logs=True, interval=0.03):
        events.append(event)
        if isinstance(event, fal_client.Queued):
            sb.state.release()

    positions = [e.position for e in events if isinstance(e, fal_client.Queued)]
    assert positions[0] == 1 and positions[-1] == 0 and positions == sorted(positions, reverse=True)
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("InProgress") > kinds.index("Queued")
    assert any(e.logs for e in events if isinstance(e, fal_client.InProgress))
    done = events[-1]
    assert isinstance(done, fal_client.Completed) and done.error is None
    assert done.metrics["inference_time"] >= 0.25
    assert [log["message"] for log in done.logs] == [
        "Loading model",
        "Generating: step 1/2",
        "Generating: step 2/2",
    ]
    assert {"level", "source", "timestamp"} <= set(done.logs[0])

    result = await handle.get()
    assert result["seed"] == 7 and result["prompt"] == "a lighthouse"
    assert result["has_nsfw_concepts"] == [False] and "inference" in result["timings"]
    image = result["images"][0]
    assert (image["width"], image["height"]) == (1024, 768)  # landscape_4_3 default
    assert image["content_type"] == "image/jpeg"
    assert sb.state.submissions[0]["input"] == {"prompt": "a lighthouse", "seed": 7}
    routes = [r["route"] for r in sb.state.requests]
    assert routes[0] == "submit" and "status" in routes and routes[-1] == "result"
    assert all("authorization" not in str(r).lower() for r in sb.state.requests)


@pytest.mark.anyio
async def test_status_without_logs_and_request_ids(sb, http):
    response = await http.post("/queue/fal-ai/flux/dev", json={"prompt": "x"})
    body = response.json()
    assert response.headers["x-fal-request-id"] == body["request_id"]
    assert body["status_url"] == f"{sb.base_url}/queue/fal-ai/flux/requests/{body['request_id']}/status"
    status = (await http.get(body["status_url"], params={"logs": "0"})).json()
    assert status["status"] == "IN_PROGRESS" and status["logs"] is None
    early = await http.get(body["response_url"])
    assert early.status_code == 400 and early.json() == {"detail": "Request is still in progress"}
    assert (await http.get("/queue/fal-ai/flux/requests/nope/status")).status_code == 404
    # the request id belongs to fal-ai/flux, not another app
    assert (await http.get(f"/queue/fal-ai/other/requests/{body['request_id']}")).status_code == 404


@pytest.mark.anyio
async def test_validation_errors_like_fal(fal):
    cases = {
        "extra_forbidden": {"prompt": "x", "num_steps": 4},
        "missing": {"image_size": "square"},
        "literal_error": {"prompt": "x", "output_format": "gif"},
        "int_from_float": {"prompt": "x", "num_images": 1.5},
        "less_than_equal": {"prompt": "x", "image_size": {"width": 20000, "height": 512}},
        "int_type": {"prompt": "x", "num_images": "2"},
    }
    handles = {kind: await fal.submit("fal-ai/flux/schnell", body) for kind, body in cases.items()}
    for kind, handle in handles.items():
        with pytest.raises(fal_client.FalClientHTTPError) as info:
            await handle.get()
        assert info.value.status_code == 422
        [error] = info.value.message
        assert error["type"] == kind and error["loc"][0] == "body"
        status = await handle.status()
        assert isinstance(status, fal_client.Completed) and status.error
    assert handles["extra_forbidden"].request_id  # the submit itself was accepted


@pytest.mark.anyio
async def test_unknown_endpoint_bad_body_and_auth(sb, http):
    response = await http.post("/queue/fal-ai/no-such-model", json={"prompt": "x"})
    assert response.status_code == 404 and "not found" in response.json()["detail"]
    assert (await http.post("/queue/fal-ai/flux/dev", json=[1, 2])).status_code == 422
    async with httpx.AsyncClient(base_url=sb.base_url) as anonymous:
        response = await anonymous.post("/queue/fal-ai/flux/dev", json={"prompt": "x"})
        assert response.status_code == 401 and response.json() == {"detail": "Missing authorization header"}
        assert "x-fal-request-id" in response.headers
        response = await anonymous.get("/platform/v1/models")
        assert response.status_code == 401 and response.json()["error"]["type"] == "authorization_error"
        response = await anonymous.post("/cdn/files/upload", content=b"x")
        assert response.status_code == 401
        bad_token = {"Authorization": "Bearer bad"}
        response = await anonymous.post("/cdn/files/upload", content=b"x", headers=bad_token)
        assert response.status_code == 401
        assert (
            await anonymous.get("/openapi/queue/openapi.json", params={"endpoint_id": "fal-ai/flux/dev"})
        ).status_code == 200


@pytest.mark.anyio
async def test_image_size_presets_and_objects(fal):
    wide = await fal.run("fal-ai/flux/dev", {"prompt": "wide", "image_size": "landscape_16_9"})
    small = {"prompt": "small", "image_size": {"width": 300, "height": 200}, "output_format": "png"}
    custom = await fal.run("fal-ai/flux/schnell", {**small, "num_images": 2})
    for result, size, fmt in ((wide, (1024, 576), "JPEG"), (custom, (300, 200), "PNG")):
        for image in result["images"]:
            data = (await download(image["url"])).content
            decoded = Image.open(io.BytesIO(data))
            assert decoded.size == size == (image["width"], image["height"])
            assert decoded.format == fmt and image["file_size"] == len(data)
    assert len(custom["images"]) == 2 and custom["images"][0]["url"] != custom["images"][1]["url"]


@pytest.mark.anyio
async def test_same_prompt_and_seed_give_the_same_image(fal):
    args = {"prompt": "deterministic", "seed": 42, "image_size": "square"}
    first, second = await fal.run("fal-ai/flux/schnell", args), await fal.run("fal-ai/flux/schnell", args)
    a = (await download(first["images"][0]["url"])).content
    b = (await download(second["images"][0]["url"])).content
    assert a == b


# --- cancellation and job outcomes ----------------------------------------------------------


@pytest.mark.anyio
async def test_never_finish_then_cancel_is_recorded(sb, fal):
    sb.state.add_fault(outcome="never_finish", endpoint="fal-ai/kling-video")
    handle = await fal.submit("fal-ai/kling-video/v2.1/master/text-to-video", {"prompt": "slow"})
    assert isinstance(await handle.status(), fal_client.InProgress)
    await handle.cancel()
    assert sb.state.cancels == [handle.request_id]
    status = await handle.status()
    assert isinstance(status, fal_client.Completed) and status.error == "Request was cancelled"
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        await handle.get()
    assert info.value.status_code == 400
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        await handle.cancel()
    assert info.value.status_code == 400 and "ALREADY_COMPLETED" in info.value.response.text
    assert sb.state.faults == []  # the outcome rule was consumed


@pytest.mark.anyio
async def test_model_error_outcome(sb, fal):
    sb.state.add_fault(outcome="model_error", message="GPU on fire", error_type="runner_server_error")
    handle = await fal.submit("fal-ai/flux/schnell", {"prompt": "x"})
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        await handle.get()
    assert info.value.status_code == 500
    assert info.value.message == "GPU on fire" and info.value.error_type == "runner_server_error"
    status = await handle.status()
    assert status.error == "GPU on fire" and status.error_type == "runner_server_error"
    # consumed: the next job succeeds
    assert (await fal.run("fal-ai/flux/schnell", {"prompt": "x"}))["images"]


@pytest.mark.anyio
async def test_outcome_rule_overrides_queue_and_job_time(sb, fal):
    sb.state.add_fault(outcome="ok", queue_ahead=3, job_seconds=0.05, hold_queue=True)
    handle = await fal.submit("fal-ai/flux/schnell", {"prompt": "x"})
    first = await handle.status()
    assert isinstance(first, fal_client.Queued) and first.position == 2
    for _ in range(3):  # each position is held until released
        sb.state.release()
        with anyio.fail_after(30):  # a hang guard, not a timing assertion
            while not sb.state.held and not (await handle.status()).__class__.__name__ == "Completed":
                await anyio.sleep(0.02)
    assert (await handle.get())["images"]


# --- faults ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fault_429_has_retry_after_and_fal_client_retries(sb, fal, http):
    sb.state.add_fault(route="submit", status=429, retry_after=2.5)
    response = await http.post("/queue/fal-ai/flux/schnell", json={"prompt": "x"})
    assert response.status_code == 429 and response.headers["retry-after"] == "2.5"
    assert "detail" in response.json()

    sb.state.add_fault(route="submit", endpoint="fal-ai/flux", status=429, retry_after=1)
    handle = await fal.submit("fal-ai/flux/schnell", {"prompt": "x"})  # fal_client retries 429
    assert handle.request_id
    statuses = [r["status"] for r in sb.state.requests if r["route"] == "submit"]
    assert statuses == [429, 429, 200]


@pytest.mark.anyio
async def test_fault_500_on_status_and_endpoint_filter(sb, fal):
    sb.state.add_fault(route="status", endpoint="fal-ai/flux-pro", status=500, times=-1)
    ok = await fal.submit("fal-ai/flux/schnell", {"prompt": "x"})
    assert (await ok.get())["images"]  # other endpoints unaffected
    handle = await fal.submit("fal-ai/flux-pro/v1.1", {"prompt": "x"})
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        await handle.status()
    assert info.value.status_code == 500
    assert sb.state.faults[0]["hits"] == 1


@pytest.mark.anyio
async def test_fault_reset_is_a_transport_error(sb, fal, http):
    handle = await fal.submit("fal-ai/flux/schnell", {"prompt": "x"})
    sb.state.add_fault(route="status", reset=True)
    with pytest.raises(httpx.TransportError):
        await http.get(handle.status_url)
    sb.state.add_fault(route="status", reset=True)
    assert isinstance(await handle.status(), (fal_client.InProgress, fal_client.Completed))  # retried
    assert [r["status"] for r in sb.state.requests if r["route"] == "status"][:2] == ["reset", "reset"]


@pytest.mark.anyio
async def test_fault_delay_and_platform_error_shape(sb, http):
    sb.state.add_fault(route="platform", delay=0.3, status=503)
    started = time.monotonic()
    response = await http.get("/platform/v1/models")
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 503 and response.json()["error"]["type"] == "server_error"


# --- storage ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_upload_then_download_identical_bytes(sb, fal):
    data = bytes(range(256)) * 40
    url = await fal.upload(data, "application/octet-stream", "blob.bin")
    assert url.startswith(sb.env()["FAL_MCP_CDN_URL"] + "/files/") and url.endswith("/blob.bin")
    response = await download(url)
    assert response.content == data
    assert response.headers["content-type"] == "application/octet-stream"
    async with httpx.AsyncClient() as client:
        head = await client.head(url)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        assert (await client.get(url + "x")).status_code == 404
    assert [r["route"] for r in sb.state.requests][:2] == ["token", "upload"]


@pytest.mark.anyio
async def test_multipart_upload(sb, fal, monkeypatch):
    monkeypatch.setattr(fal_module, "MULTIPART_THRESHOLD", 1000)
    monkeypatch.setattr(fal_module, "MULTIPART_CHUNK_SIZE", 300)
    data = os.urandom(2500)
    url = await fal.upload(data, "image/png", "big.png")
    response = await download(url)
    assert response.content == data and response.headers["content-type"] == "image/png"
    multipart = [r for r in sb.state.requests if r["route"] == "multipart"]
    assert len(multipart) == 1 + 9 + 1  # create, 9 parts, complete


@pytest.mark.anyio
async def test_upload_falls_back_to_signed_url(sb, fal):
    sb.state.add_fault(route="upload", status=500)  # breaks the CDN v3 attempt only
    url = await fal.upload(b"fallback", "text/plain", "f.txt")
    assert (await download(url)).content == b"fallback"
    assert any(r["path"] == "/rest/storage/upload/initiate" for r in sb.state.requests)


@pytest.mark.anyio
async def test_image_inputs_are_read_from_the_sandbox(fal):
    url = await fal.upload(png_bytes(320, 240), "image/png", "in.png")

    cutout = await fal.run("fal-ai/birefnet/v2", {"image_url": url, "output_mask": True})
    image = Image.open(io.BytesIO((await download(cutout["image"]["url"])).content))
    assert image.format == "PNG" and image.mode == "RGBA" and image.size == (320, 240)
    assert image.getchannel("A").getextrema() == (0, 255)
    assert cutout["mask_image"]["content_type"] == "image/png"
    webp = await fal.run("fal-ai/birefnet/v2", {"image_url": url, "output_format": "webp"})
    assert Image.open(io.BytesIO((await download(webp["image"]["url"])).content)).mode == "RGBA"

    upscaled = await fal.run("fal-ai/clarity-upscaler", {"image_url": url, "upscale_factor": 2})
    assert (upscaled["image"]["width"], upscaled["image"]["height"]) == (640, 480)
    outpainted = await fal.run(
        "fal-ai/image-apps-v2/outpaint", {"image_url": url, "expand_left": 10, "expand_top": 20}
    )
    assert (outpainted["images"][0]["width"], outpainted["images"][0]["height"]) == (330, 260)
    edited = await fal.run("fal-ai/flux/dev/image-to-image", {"image_url": url, "prompt": "blue"})
    assert (edited["images"][0]["width"], edited["images"][0]["height"]) == (320, 240)

    data_uri = "data:image/png;base64," + base64.b64encode(png_bytes(100, 50)).decode()
    edited = await fal.run("fal-ai/flux-2/edit", {"image_urls": [data_uri], "prompt": "x"})
    assert (edited["images"][0]["width"], edited["images"][0]["height"]) == (100, 50)

    with pytest.raises(fal_client.FalClientHTTPError) as info:
        await fal.run("fal-ai/aura-sr", {"image_url": "https://example.com/cat.png"})
    assert info.value.status_code == 422
    assert info.value.message[0]["loc"] == ["body", "image_url"]
    assert info.value.message[0]["type"] == "file_download_error"


# --- audio and video ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_wav_has_the_requested_length(fal):
    result = await fal.run("fal-ai/stable-audio", {"prompt": "drums", "seconds_total": 3})
    file = result["audio_file"]
    assert file["content_type"] == "audio/wav"
    with wave.open(io.BytesIO((await download(file["url"])).content)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.getnframes() / w.getframerate() == 3.0
    speech = await fal.run("fal-ai/kokoro/american-english", {"prompt": "hello there", "voice": "am_adam"})
    assert speech["audio"]["url"].endswith(".wav")
    text = await fal.run("fal-ai/wizper", {"audio_url": file["url"]})
    assert "3.0 seconds" in text["text"] and text["chunks"][-1]["timestamp"][1] == 3.0


CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf"}


def parse_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of the boxes filling data[start:end] exactly."""
    end = len(data) if end is None else end
    boxes, pos = [], start
    while pos < end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        assert size >= 8 and pos + size <= end, f"bad box {kind} at {pos}"
        boxes.append((kind, pos, size))
        if kind in CONTAINERS:
            boxes += parse_boxes(data, pos + 8, pos + size)
        pos += size
    assert pos == end
    return boxes


@pytest.mark.anyio
async def test_video_is_an_h264_mp4_a_browser_plays(fal):
    """H.264 in yuv420p (what browsers decode), the index (moov) before the media, every frame decodable,
    the ball moving between frames."""
    import av

    result = await fal.run(
        "fal-ai/kling-video/v2.1/master/text-to-video", {"prompt": "waves", "duration": "5"}
    )
    assert result["video"]["content_type"] == "video/mp4"
    data = (await download(result["video"]["url"])).content
    assert result["video"]["file_size"] == len(data)
    top = [kind for kind, pos, size in parse_boxes(data) if pos == 0 or kind in (b"moov", b"mdat")]
    assert top[0] == b"ftyp" and top.index(b"moov") < top.index(b"mdat")
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (stream.width, stream.height) == (256, 144)
        assert float(stream.duration * stream.time_base) == pytest.approx(5.0)
        frames = [frame.to_image() for frame in container.decode(stream)]
    assert len(frames) == 120  # 5 s at 24 fps
    assert frames[0].tobytes() != frames[60].tobytes()


def required_input(schema: dict, urls: dict[str, str]) -> dict:
    """The smallest valid input of a schema: its required fields, URLs of the right kind for *_url(s)."""
    args = {}
    for name in schema.get("required", ()):
        prop = schema["properties"][name]
        prop = next((o for o in prop.get("anyOf", ()) if o), prop)
        kind = next((k for k in ("video", "audio", "image", "mask") if k in name), "image")
        url = urls["image" if kind == "mask" else kind]
        if name.endswith("_urls"):
            args[name] = [url]
        elif name.endswith("_url"):
            args[name] = url
        elif "default" in prop or "enum" in prop:
            args[name] = prop.get("default", (prop.get("enum") or [None])[0])
        elif prop.get("type") in ("integer", "number"):
            args[name] = max(prop.get("minimum", 1), min(10, prop.get("maximum", 10)))
        else:
            args[name] = {"string": "a prompt", "boolean": False, "array": ["a prompt"], "object": {}}.get(
                prop.get("type"), "a prompt"
            )
    return args


async def run_every_endpoint(fal, endpoints) -> dict[str, dict]:
    """Each endpoint run with its required input; its answer checked against its output schema."""
    image = await fal.upload(png_bytes(64, 48), "image/png", "in.png")
    audio = (await fal.run("fal-ai/stable-audio", {"prompt": "x", "seconds_total": 2}))["audio_file"]["url"]
    video = (await fal.run("fal-ai/kling-video/v2.1/master/text-to-video", {"prompt": "x"}))["video"]["url"]
    urls = {"image": image, "audio": audio, "video": video}
    results = await asyncio.gather(*(fal.run(e.id, required_input(e.input_schema, urls)) for e in endpoints))
    for endpoint, result in zip(endpoints, results, strict=True):
        problems = [e.message for e in Draft202012Validator(endpoint.output_schema).iter_errors(result)]
        assert problems == [], (endpoint.id, problems)
    return {endpoint.id: result for endpoint, result in zip(endpoints, results, strict=True)}


@pytest.mark.anyio
async def test_every_endpoint_answers_in_its_output_schema(sb, fal):
    sb.state.set_config(job_seconds=0, log_lines=0)
    results = await run_every_endpoint(fal, ENDPOINTS)
    assert results["decart/lucy-edit/dev"]["video"]["url"].startswith(
        "data:video/mp4;base64,"
    )  # sync_mode default
    assert "mask_image" not in results["fal-ai/birefnet/v2"]  # optional, not asked for
    assert results["fal-ai/wizper"]["languages"] == ["en"]


@pytest.mark.anyio
async def test_an_endpoint_without_schemas_takes_any_input_and_draws_its_kind(sb, fal):
    sb.state.endpoints["test/loose-video"] = Endpoint("test/loose-video", kind="video")
    sb.state.endpoints["test/loose-image"] = Endpoint("test/loose-image", kind="image")
    video = await fal.run("test/loose-video", {"prompt": "x", "anything": [1, 2], "duration": 2})
    assert video["video"]["content_type"] == "video/mp4" and isinstance(video["seed"], int)
    image = await fal.run("test/loose-image", {"prompt": "x", "num_images": 2, "image_size": "square"})
    assert [(i["width"], i["height"]) for i in image["images"]] == [(512, 512)] * 2


@pytest.mark.anyio
async def test_nested_objects_refs_and_optional_fields(sb, fal):
    output = {
        "type": "object",
        "$defs": {"Frame": obj(["url", "width"], url=p("string"), width=p("integer"), height=p("integer"))},
        "properties": {
            "result": obj(
                ["frames", "score", "label"],
                frames=p("array", items={"$ref": "#/$defs/Frame"}),
                score=p("number", minimum=0.5),
                label=p("string", enum=["cat", "dog"]),
                note=p("string"),
            ),
            "debug_video": FILE,
        },
        "required": ["result"],
    }
    sb.state.endpoints["test/nested"] = Endpoint("test/nested", obj(["prompt"], prompt=p("string")), output)
    result = await fal.run("test/nested", {"prompt": "nest"})
    assert Draft202012Validator(output).is_valid(result)
    assert set(result) == {"result"}  # the optional file is left out: no output_* flag asked for it
    frame = result["result"]["frames"][0]
    assert frame["width"] == 1024 and frame["url"].startswith(sb.base_url)
    assert result["result"]["score"] == 0.5 and result["result"]["label"] == "cat"

    asked = Endpoint(
        "test/asked",
        obj([], output_mask=p("boolean")),
        obj(["image"], image=IMAGE, mask_image={**IMAGE, "description": "The mask"}),
    )
    sb.state.endpoints[asked.id] = asked
    plain = await fal.run(asked.id, {})
    masked = await fal.run(asked.id, {"output_mask": True})
    assert "mask_image" not in plain and masked["mask_image"]["content_type"] == "image/png"


def test_openapi_documents_show_fal_defaults():
    from fal_mcp import openapi_schemas
    from fal_mcp_sandbox.endpoints import openapi_document

    doc = openapi_document(BY_ID["fal-ai/birefnet/v2"], "http://sandbox/queue")
    inputs, outputs = openapi_schemas(doc, "fal-ai/birefnet/v2")
    assert inputs["properties"]["output_format"]["default"] == "png"  # from x-head-default
    assert inputs["required"] == ["image_url"] and "mask_image" in outputs["properties"]
    assert doc["info"]["x-fal-metadata"]["category"] == "image-to-image"
    assert openapi_document(Endpoint("test/none"), "http://sandbox/queue") is None
    categories = {e.id: e.category for e in ENDPOINTS}
    assert categories["fal-ai/flux/schnell"] == "text-to-image"
    assert categories["fal-ai/kling-video/v2.1/standard/image-to-video"] == "image-to-video"
    assert categories["decart/lucy-edit/dev"] == "video-to-video"
    assert categories["fal-ai/wizper"] == "speech-to-text"
    assert categories["fal-ai/kokoro/american-english"] == "text-to-speech"


# --- platform API -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_models_pagination_collects_every_model_once(sb, http):
    for i in range(12):  # more than one default page of 20
        sb.state.endpoints[f"test/model-{i}"] = Endpoint(f"test/model-{i}", name=f"Model {i}")
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        body = (await http.get("/platform/v1/models", params=params)).json()
        seen += [m["endpoint_id"] for m in body["models"]]
        pages += 1
        if not body["has_more"]:
            assert body["next_cursor"] is None
            break
        cursor = body["next_cursor"]
    assert len(seen) == len(set(seen)) == len(sb.state.endpoints) > 20
    assert pages == -(-len(seen) // 7)
    default = (await http.get("/platform/v1/models")).json()
    assert len(default["models"]) == 20 and default["has_more"]
    metadata = default["models"][0]["metadata"]
    expected = {"display_name", "category", "description", "status", "tags", "thumbnail_url", "highlighted"}
    assert expected <= set(metadata)
    assert (await http.get(metadata["thumbnail_url"])).headers["content-type"] == "image/jpeg"
    assert (await http.get("/platform/v1/models", params={"limit": 500})).status_code == 400
    bad = await http.get("/platform/v1/models", params={"cursor": "!!!"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "validation_error"


@pytest.mark.anyio
async def test_models_search_filters_and_openapi(sb, http):
    found = (await http.get("/platform/v1/models", params={"q": "KLING image"})).json()["models"]
    ids = [m["endpoint_id"] for m in found]
    assert "fal-ai/kling-video/v2.1/standard/image-to-video" in ids
    assert all("kling" in i for i in ids) and "fal-ai/kling-video/v2.1/master/text-to-video" not in ids
    by_tag = (await http.get("/platform/v1/models", params={"q": "background-removal"})).json()["models"]
    assert "fal-ai/birefnet/v2" in [m["endpoint_id"] for m in by_tag]
    params = {"category": "speech-to-text", "limit": 100}
    speech = (await http.get("/platform/v1/models", params=params)).json()
    assert [m["endpoint_id"] for m in speech["models"]] == ["fal-ai/wizper"]

    params = [
        ("endpoint_id", "fal-ai/flux/schnell"),
        ("endpoint_id", "fal-ai/flux/dev"),
        ("expand", "openapi-3.0"),
    ]
    models = (await http.get("/platform/v1/models", params=params)).json()["models"]
    assert [m["endpoint_id"] for m in models] == ["fal-ai/flux/schnell", "fal-ai/flux/dev"]
    assert (
        models[0]["metadata"]["display_name"] == "FLUX.1 [schnell]" and models[0]["metadata"]["highlighted"]
    )
    doc = models[0]["openapi"]
    ref = doc["paths"]["/fal-ai/flux/schnell"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = doc["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
    assert schema["required"] == ["prompt"]
    assert schema["properties"]["output_format"]["enum"] == ["jpeg", "png"]
    assert schema["properties"]["image_size"]["default"] == "landscape_4_3"  # fal's, which the vendoring lost
    assert schema["properties"]["num_images"]["maximum"] == 4
    result = doc["paths"]["/fal-ai/flux/requests/{request_id}"]["get"]["responses"]["200"]
    out_ref = result["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "images" in doc["components"]["schemas"][out_ref]["required"]
    async with httpx.AsyncClient(base_url=sb.base_url) as anonymous:
        public = await anonymous.get(
            "/openapi/queue/openapi.json", params={"endpoint_id": "fal-ai/flux/schnell"}
        )
    assert public.json() == doc
    no_expand = (await http.get("/platform/v1/models", params={"endpoint_id": "fal-ai/flux/schnell"})).json()
    assert "openapi" not in no_expand["models"][0]


@pytest.mark.anyio
async def test_pricing_and_estimates(http):
    params = [
        ("endpoint_id", "fal-ai/flux/schnell"),
        ("endpoint_id", "fal-ai/nope"),
        ("endpoint_id", "fal-ai/kling-video/v2.1/master/text-to-video"),
    ]
    body = (await http.get("/platform/v1/models/pricing", params=params)).json()
    assert body["has_more"] is False and body["next_cursor"] is None
    assert body["prices"] == [
        {"endpoint_id": "fal-ai/flux/schnell", "unit_price": 0.003, "unit": "image", "currency": "USD"},
        {
            "endpoint_id": "fal-ai/kling-video/v2.1/master/text-to-video",
            "unit_price": 0.28,
            "unit": "second",
            "currency": "USD",
        },
    ]
    assert (await http.get("/platform/v1/models/pricing")).status_code == 400
    many = [("endpoint_id", f"x/{i}") for i in range(51)]
    too_many = await http.get("/platform/v1/models/pricing", params=many)
    assert too_many.status_code == 400 and too_many.json()["error"]["type"] == "validation_error"

    estimate = await http.post(
        "/platform/v1/models/pricing/estimate",
        json={"estimate_type": "unit_price", "endpoints": {"fal-ai/flux/schnell": {"unit_quantity": 10}}},
    )
    assert estimate.json() == {"estimate_type": "unit_price", "total_cost": 0.03, "currency": "USD"}
    estimate = await http.post(
        "/platform/v1/models/pricing/estimate",
        json={
            "estimate_type": "historical_api_price",
            "endpoints": {"fal-ai/kling-video/v2.1/master/text-to-video": {"call_quantity": 2}},
        },
    )
    assert estimate.json()["total_cost"] == 2.8  # 2 calls x a typical 5 s x 0.28
    for bad in (
        {"estimate_type": "guess", "endpoints": {}},
        {"estimate_type": "unit_price"},
        {"estimate_type": "unit_price", "endpoints": {"fal-ai/flux/dev": {"call_quantity": 1}}},
    ):
        response = await http.post("/platform/v1/models/pricing/estimate", json=bad)
        assert response.status_code == 400 and "message" in response.json()["error"]
    unpriced = await http.post(
        "/platform/v1/models/pricing/estimate",
        json={"estimate_type": "unit_price", "endpoints": {"fal-ai/nope": {"unit_quantity": 1}}},
    )
    assert unpriced.status_code == 404 and unpriced.json()["error"]["type"] == "not_found"


@pytest.mark.anyio
async def test_usage_counts_completed_jobs(sb, fal, http):
    empty = (await http.get("/platform/v1/models/usage", params={"expand": "summary"})).json()
    assert empty["time_series"] == [] and empty["summary"] == []
    await fal.run("fal-ai/flux/schnell", {"prompt": "x", "num_images": 2})
    await fal.run("fal-ai/stable-audio", {"prompt": "x", "seconds_total": 4})
    with pytest.raises(fal_client.FalClientHTTPError):
        await fal.run("fal-ai/flux/schnell", {"prompt": "x", "bogus": 1})  # failed jobs are not billed
    params = {"expand": "summary", "timeframe": "hour"}
    body = (await http.get("/platform/v1/models/usage", params=params)).json()
    summary = {item["endpoint_id"]: item for item in body["summary"]}
    assert summary["fal-ai/flux/schnell"] == {
        "endpoint_id": "fal-ai/flux/schnell",
        "unit": "image",
        "quantity": 2,
        "unit_price": 0.003,
    }
    audio = summary["fal-ai/stable-audio"]
    assert audio["quantity"] == 4 and audio["unit"] == "second"
    cost = sum(i["quantity"] * i["unit_price"] for i in body["summary"])
    assert cost == pytest.approx(2 * 0.003 + 4 * 0.001)
    [bucket] = body["time_series"]
    assert bucket["bucket"].endswith(":00:00+00:00") and len(bucket["results"]) == 2
    filtered = (
        await http.get(
            "/platform/v1/models/usage",
            params={"endpoint_id": "fal-ai/stable-audio", "start": "2000-01-01", "expand": "summary"},
        )
    ).json()
    assert [i["endpoint_id"] for i in filtered["summary"]] == ["fal-ai/stable-audio"]
    future = (await http.get("/platform/v1/models/usage", params={"start": "2999-01-01T00:00:00Z"})).json()
    assert future["time_series"] == []

    sb.state.set_config(usage_forbidden=True)
    forbidden = await http.get("/platform/v1/models/usage")
    assert forbidden.status_code == 403 and forbidden.json()["error"]["type"] == "authorization_error"


# --- control routes, threads and the CLI ---------------------------------------------------------


@pytest.mark.anyio
async def test_http_control_routes(sb, http):
    assert (await http.get("/_sandbox/health")).json()["status"] == "ok"
    config = (await http.post("/_sandbox/config", json={"job_seconds": 0.05, "log_lines": 1})).json()
    assert config["job_seconds"] == 0.05 and sb.state.config.log_lines == 1
    assert (await http.post("/_sandbox/config", json={"nope": 1})).status_code == 400
    added = await http.post(
        "/_sandbox/faults",
        json=[{"route": "result", "status": 502, "times": 2}, {"outcome": "model_error", "message": "boom"}],
    )
    assert added.status_code == 200 and len(sb.state.faults) == 2
    assert (await http.post("/_sandbox/faults", json={"route": "bogus", "status": 500})).status_code == 400
    assert (await http.post("/_sandbox/faults", json={"route": "submit"})).status_code == 400

    submitted = (await http.post("/queue/fal-ai/flux/schnell", json={"prompt": "x"})).json()
    with anyio.fail_after(60):  # until the job has failed (model_error); a hang guard, not a timing assertion
        while not sb.state.jobs[submitted["request_id"]].finished:
            await asyncio.sleep(0.01)
    assert (await http.get(submitted["response_url"])).status_code == 502  # result fault
    assert (await http.put(submitted["cancel_url"])).status_code == 400  # already failed (model_error)
    requests = (await http.get("/_sandbox/requests")).json()
    assert [r["route"] for r in requests] == ["submit", "result", "cancel"]
    assert requests[0]["json"] == {"prompt": "x"} and requests[0]["request_id"] == submitted["request_id"]
    submissions = (await http.get("/_sandbox/submissions")).json()
    assert submissions[0]["endpoint_id"] == "fal-ai/flux/schnell"
    assert (await http.get("/_sandbox/cancels")).json() == [submitted["request_id"]]

    assert (await http.post("/_sandbox/reset")).json() == {"status": "ok"}
    assert (await http.get("/_sandbox/requests")).json() == []
    assert sb.state.faults == [] and sb.state.config.job_seconds == 0.1  # back to the start config


def test_start_in_thread_with_the_sync_client(monkeypatch, tmp_path):
    monkeypatch.setenv("FAL_HOME_DIR", str(tmp_path))
    sb = Sandbox.start_in_thread(endpoints=ENDPOINTS, job_seconds=0.05)
    base_url = sb.base_url
    try:
        point_fal_client_at(sb, monkeypatch)
        result = fal_client.SyncClient(key="sandbox-key").subscribe("fal-ai/flux/schnell", {"prompt": "sync"})
        assert result["images"][0]["width"] == 1024
        assert sb.state.submissions[0]["input"] == {"prompt": "sync"}
        assert httpx.get(base_url + "/_sandbox/health").status_code == 200
    finally:
        sb.stop_thread()
    with pytest.raises(httpx.ConnectError):
        httpx.get(base_url + "/_sandbox/health")


def test_import_is_cheap():
    code = (
        "import sys; import fal_mcp; before = set(sys.modules); import fal_mcp_sandbox; "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in "
        "('starlette', 'uvicorn', 'PIL', 'httpx')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_command_line_prints_settings_and_stops_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "fal_mcp_sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [process.stdout.readline().strip() for _ in range(7)]
        settings = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        assert set(settings) == {
            "FAL_MCP_RUN_URL",
            "FAL_MCP_QUEUE_URL",
            "FAL_MCP_REST_URL",
            "FAL_MCP_CDN_URL",
            "FAL_MCP_PLATFORM_URL",
            "FAL_MCP_WEBHOOK_JWKS_URL",
            "FAL_KEY",
        }
        base = settings["FAL_MCP_QUEUE_URL"].removesuffix("/queue")
        assert httpx.get(base + "/_sandbox/health").json()["status"] == "ok"
        response = httpx.get(settings["FAL_MCP_PLATFORM_URL"] + "/models", headers=KEY)
        assert response.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    assert process.stdout.read() == ""  # settings are printed once, nothing else


# --- the installed packs ------------------------------------------------------------------------------------


def test_serves_what_the_installed_packs_register(fal_registry):
    served = installed()
    models = list(fal_registry.models.values())
    assert set(served) == {model.endpoint_id for model in models}
    hints = {}
    for hint in fal_registry.prices:
        hints.setdefault(hint.endpoint_id, hint)
    for endpoint_id, endpoint in served.items():
        first = next(m for m in models if m.endpoint_id == endpoint_id)
        assert endpoint.description == first.description and endpoint.name in first.description
        assert (
            endpoint.input_schema == first.input_schema() and endpoint.output_schema == first.output_schema()
        )
        hint = hints.get(endpoint_id)
        assert (endpoint.unit_price, endpoint.unit) == (
            (hint.unit_price, hint.unit) if hint else (None, "request")
        )
    # the sandbox is no pack: nothing of it is loaded as one
    assert all(pack.distribution != "fal-mcp-sandbox" for pack in fal_registry.packs)


@pytest.mark.anyio
async def test_installed_endpoints_with_schemas_answer_in_them(monkeypatch, tmp_path):
    """Every endpoint whose pack vendors its schemas, run with its required input: the answer fits its
    output schema (the ones a test needs for inputs are added from ENDPOINTS when no pack has them)."""
    served = installed()
    with_schemas = [e for e in served.values() if e.input_schema and e.output_schema]
    if not with_schemas:
        pytest.skip("no installed pack vendors schemas")
    helpers = [
        e
        for e in ENDPOINTS
        if e.id in ("fal-ai/stable-audio", "fal-ai/kling-video/v2.1/master/text-to-video")
        and e.id not in served
    ]
    monkeypatch.setenv("FAL_HOME_DIR", str(tmp_path))
    async with Sandbox(endpoints=[*served.values(), *helpers], job_seconds=0, log_lines=0) as sandbox:
        point_fal_client_at(sandbox, monkeypatch)
        await run_every_endpoint(fal_client.AsyncClient(key="sandbox-key"), with_schemas)
