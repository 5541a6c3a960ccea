"""The pack's tools against the fal sandbox: over stdio through a real `fal-mcp serve`, and in-process.

Each test checks the exact input the sandbox received: the translation to each endpoint's own fields
is the part of a pack that fal would otherwise ignore silently.
"""

from __future__ import annotations

import base64
import io
import wave

import httpx
import pytest

from fal_mcp_sandbox.testing import stdio_session

pytestmark = pytest.mark.anyio

# This pack and the one whose tool it extends: other installed packs cannot get in the way.
PACKS = {"FAL_MCP_PLUGINS": "speech,image"}


def wav_bytes(seconds: float = 2.0, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


async def download(url: str) -> bytes:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    response.raise_for_status()
    return response.content


def ok(result):
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def test_text_to_speech_over_stdio(fal_sandbox):
    async with stdio_session(PACKS, sandbox=fal_sandbox) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        schema = tools["text_to_speech"].input_schema
        assert schema["required"] == ["text"] and "am_adam" in str(schema["properties"]["voice"])
        arguments = {"text": "Hello from the sandbox", "voice": "am_adam", "speed": 1.5}
        result = await client.call_tool("text_to_speech", arguments)
    out = ok(result)
    [submitted] = fal_sandbox.state.submissions
    assert submitted["endpoint_id"] == "fal-ai/kokoro/american-english"
    assert submitted["input"] == {"prompt": "Hello from the sandbox", "voice": "am_adam", "speed": 1.5}
    assert (out["endpoint"], out["model"], out["request_id"]) == (
        "fal-ai/kokoro/american-english",
        "kokoro",
        submitted["request_id"],
    )
    [audio] = out["files"]
    assert audio["content_type"] == "audio/wav" and audio["url"] in result.content[0].text
    assert (await download(audio["url"]))[:4] == b"RIFF"


@pytest.mark.parametrize(
    ("model", "source", "extra", "sent"),
    [
        ("wizper", "path", {"language": "fr", "task": "translate"}, {"language": "fr", "task": "translate"}),
        # whisper runs wizper too (fal-ai/whisper is gone), asking it to detect the language: null
        ("whisper", "data", {}, {"task": "transcribe", "language": None}),
    ],
)
async def test_transcribe_audio_over_stdio(fal_sandbox, tmp_path, model, source, extra, sent):
    sound = wav_bytes()
    if source == "path":
        (tmp_path / "talk.wav").write_bytes(sound)
        audio = str(tmp_path / "talk.wav")
    else:
        audio = "data:audio/wav;base64," + base64.b64encode(sound).decode()
    env = {**PACKS, "FAL_MCP_ALLOWED_DIRS": str(tmp_path)}
    async with stdio_session(env, sandbox=fal_sandbox) as client:
        result = await client.call_tool("transcribe_audio", {"audio_url": audio, "model": model, **extra})
    out = ok(result)
    [submitted] = fal_sandbox.state.submissions
    assert submitted["endpoint_id"] == "fal-ai/wizper"
    uploaded = submitted["input"]["audio_url"]  # the local file or data: URI, now on (sandbox) fal storage
    assert uploaded.startswith(fal_sandbox.base_url + "/cdn/") and await download(uploaded) == sound
    assert submitted["input"] == {"audio_url": uploaded, **sent}
    assert out["text"].startswith("This is a sandbox transcription") and out["text"] in result.content[0].text
    assert [(c["start"], c["end"]) for c in out["chunks"]] == [(0.0, 1.0), (1.0, 2.0)]
    assert out["languages"] == [extra.get("language", "en")]
    assert (out["model"], out["request_id"], out["notes"]) == (model, submitted["request_id"], [])


async def test_flux_pro_ultra_over_stdio(fal_sandbox, fal_registry):
    if "generate_image" not in fal_registry.tools:
        pytest.skip("generate_image comes with fal-mcp-image")
    arguments = {
        "prompt": "a lighthouse",
        "model": "flux_pro_ultra",
        "image_size": "portrait_3_4",
        "num_images": 2,
        "seed": 7,
        "negative_prompt": "fog",
    }
    async with stdio_session(PACKS, sandbox=fal_sandbox) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert "flux_pro_ultra" in tools["generate_image"].input_schema["properties"]["model"]["enum"]
        result = await client.call_tool("generate_image", arguments)
    out = ok(result)
    [submitted] = fal_sandbox.state.submissions
    assert submitted["endpoint_id"] == "fal-ai/flux-pro/v1.1-ultra"
    assert submitted["input"] == {"prompt": "a lighthouse", "aspect_ratio": "3:4", "num_images": 2, "seed": 7}
    assert len(out["files"]) == 2 and out["model"] == "flux_pro_ultra"
    assert any("aspect_ratio 3:4" in note for note in out["notes"])
    assert any("negative_prompt was not sent" in note for note in out["notes"])


async def test_wizper_without_a_language_says_it_assumes_english(fal_tools, fal_sandbox):
    audio = "data:audio/wav;base64," + base64.b64encode(wav_bytes(1.0)).decode()
    out = ok(await fal_tools.call("transcribe_audio", {"audio_url": audio}))
    assert fal_sandbox.state.submissions[-1]["endpoint_id"] == "fal-ai/wizper"  # the default model
    assert "language" not in fal_sandbox.state.submissions[-1]["input"]
    assert out["notes"] == [
        "language not given: wizper assumes en; give language, or use whisper, which detects it"
    ]


@pytest.mark.parametrize(
    ("tool", "arguments", "named"),
    [
        ("transcribe_audio", {"audio_url": "https://example.com/a.wav", "language": "French"}, "language"),
        # a code of the right shape that wizper does not know (its schema lists the ones it does)
        ("transcribe_audio", {"audio_url": "https://example.com/a.wav", "language": "xx"}, "language"),
        ("transcribe_audio", {"audio_url": "https://example.com/a.wav", "task": "summarize"}, "task"),
        ("transcribe_audio", {"audio_url": "https://example.com/a.wav", "model": "kokoro"}, "model"),
        ("text_to_speech", {"text": "hi", "voice": "robot"}, "voice"),
        ("text_to_speech", {"text": "hi", "speed": 9}, "speed"),
    ],
)
async def test_bad_arguments_are_refused_before_fal(fal_tools, fal_sandbox, tool, arguments, named):
    result = await fal_tools.call(tool, arguments)
    assert result.is_error and named in result.content[0].text
    assert fal_sandbox.state.submissions == []


async def test_advice_reaches_recommend_model(fal_tools):
    if "recommend_model" not in fal_tools.registry.tools:
        pytest.skip("recommend_model comes with fal-mcp-utility")
    out = ok(await fal_tools.call("recommend_model", {"task": "narration for a video", "category": "audio"}))
    assert out["recommendations"][0]["model"] == "text_to_speech:kokoro"
