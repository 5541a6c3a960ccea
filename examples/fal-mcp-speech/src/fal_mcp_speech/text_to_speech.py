"""text_to_speech: text in, spoken audio out."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fal_mcp import (
    EndpointCall,
    EndpointInput,
    GenerationOutput,
    Model,
    PriceHint,
    Recommendation,
    Tool,
    ToolContext,
    ToolError,
    ToolInput,
    ToolResult,
    find_files,
    generation_output,
)

# kokoro's American English voices: af_* female, am_* male.
Voice = Literal["af_heart", "af_bella", "af_nicole", "af_sarah", "am_adam", "am_michael", "am_fenrir"]


class TextToSpeechInput(ToolInput):
    text: str = Field(min_length=1, max_length=5_000, description="What to say")
    voice: Voice = Field("af_heart", description="Voice: af_* female, am_* male (American English)")
    speed: float = Field(1.0, ge=0.5, le=2.0, description="Speaking speed; 1 is normal")
    model: str | None = Field(None, description="Model to use.")


def kokoro_input(args: TextToSpeechInput) -> EndpointCall:
    req = EndpointInput(args, "kokoro")
    req.send(prompt=args.text)  # kokoro calls the text "prompt"
    req.copy("voice", "speed")
    return req.call()


MODELS = [
    Model(
        "kokoro",
        "fal-ai/kokoro/american-english",
        "text_to_speech",
        "Kokoro: light, natural-sounding American English speech",
        kokoro_input,
        default=True,
        field_arguments={"prompt": "text"},
    ),
]

# Offline hints only; live prices come from fal's pricing API.
PRICES = [PriceHint("fal-ai/kokoro/american-english", 0.02, "1000 characters")]

RECOMMENDATIONS = [
    Recommendation(
        "kokoro",
        ("speech", "voice", "voiceover", "narration", "read aloud", "tts", "text to speech"),
        "Natural American English speech, fast and cheap",
        "audio",
    ),
]


async def text_to_speech(args: TextToSpeechInput, ctx: ToolContext) -> ToolResult:
    model = ctx.model(args.model)
    result, call = await ctx.run_model(model, args)
    files = find_files(result.data)  # wherever the model put it (kokoro: "audio")
    if not files:
        raise ToolError(f"{model.endpoint_id} returned no audio (request {result.request_id})")
    output = generation_output(model, result, call, prompt=args.text, files=files)
    audio = files[0]
    length = f", {audio.duration:.1f} s" if audio.duration else ""
    lines = [
        f"Spoke {len(args.text)} characters with {model.alias} ({model.endpoint_id}), "
        f"voice {args.voice}, request {result.request_id}:",
        f"{audio.url} ({audio.content_type}{length})",
    ]
    lines += [f"Note: {note}" for note in call.notes]
    return ToolResult("\n".join(lines), output)


TOOLS = [
    Tool(
        name="text_to_speech",
        title="Text to speech",
        description="Speak a text aloud with a fal.ai text-to-speech model. Returns the audio file's URL.",
        input_model=TextToSpeechInput,
        handler=text_to_speech,
        output_model=GenerationOutput,
        category="audio",
        model_field="model",
    ),
]
