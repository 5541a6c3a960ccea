"""transcribe_audio: speech to text, with timed chunks.

Both aliases run fal-ai/wizper (fal's Whisper v3): `wizper` assumes English unless given a
language, `whisper` detects it (fal-ai/whisper itself is gone from fal). The languages a model
knows are read from fal's schema of its endpoint, vendored in schemas/. `read_output` turns
fal's answer into this tool's output model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from fal_mcp import (
    ArgumentError,
    EndpointCall,
    MediaUrl,
    Model,
    PriceHint,
    Recommendation,
    Tool,
    ToolContext,
    ToolHints,
    ToolInput,
    ToolResult,
    input_field,
)

PACKAGE = __name__.split(".")[0]  # where the endpoints' schemas are vendored
WIZPER = "fal-ai/wizper"


class TranscribeAudioInput(ToolInput):
    audio_url: MediaUrl = Field(description="The audio: an https URL, a data: URI or a local path")
    language: str | None = Field(
        None, pattern=r"^[a-z]{2,3}$", description="Language spoken, as an ISO 639-1 code such as en or fr"
    )
    task: Literal["transcribe", "translate"] = Field(
        "transcribe", description="transcribe: text in the language spoken; translate: English text"
    )
    model: str | None = Field(None, description="Model to use.")


class Chunk(BaseModel):
    start: float | None = Field(None, description="Start, in seconds")
    end: float | None = Field(None, description="End, in seconds")
    text: str
    speaker: str | None = None


class Transcription(BaseModel):
    text: str
    chunks: list[Chunk] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list, description="Languages detected or given")
    endpoint: str = ""
    model: str | None = None
    request_id: str = ""
    notes: list[str] = Field(default_factory=list, description="What was adapted, and why")


def _chunk(raw: Mapping[str, Any]) -> Chunk:
    start, end = (list(raw.get("timestamp") or []) + [None, None])[:2]
    return Chunk(start=start, end=end, text=str(raw.get("text", "")).strip(), speaker=raw.get("speaker"))


def _reader(languages_key: str):
    def read_output(data: Mapping[str, Any]) -> Transcription:
        return Transcription(
            text=str(data.get("text", "")).strip(),
            chunks=[_chunk(c) for c in data.get("chunks") or () if isinstance(c, Mapping)],
            languages=list(data.get(languages_key) or ()),
        )

    return read_output


def known_languages(endpoint_id: str) -> list[str]:
    """The language codes the endpoint takes (its schema's enum; wizper's allows null: detect)."""
    field = input_field(PACKAGE, endpoint_id, "language")
    return next((option["enum"] for option in (field, *field.get("anyOf", ())) if "enum" in option), [])


def _translator(alias: str, endpoint_id: str, detect: bool):
    """`detect`: without a language, ask the model to detect it (null) instead of taking its default (en)."""

    def build_input(args: TranscribeAudioInput) -> EndpointCall:
        arguments = {"audio_url": args.audio_url, "task": args.task}
        notes = ()
        if args.language:
            known = known_languages(endpoint_id)
            if known and args.language not in known:
                raise ArgumentError(
                    "language",
                    f"{alias} does not know {args.language!r}; it takes ISO 639-1 "
                    "codes such as en, fr, de, es, ja, zh",
                )
            arguments["language"] = args.language
        elif detect:
            arguments["language"] = None
        else:
            notes = (
                f"language not given: {alias} assumes en; give language, or use whisper, which detects it",
            )
        return EndpointCall(arguments, notes)

    return build_input


MODELS = [
    Model(
        "wizper",
        WIZPER,
        "transcribe_audio",
        "Wizper: Whisper v3 large, fast and cheap; assumes English unless given a language",
        _translator("wizper", WIZPER, detect=False),
        read_output=_reader("languages"),
        default=True,
    ),
    # fal-ai/whisper is gone from fal: the same Whisper v3 on fal-ai/wizper, detecting the language.
    Model(
        "whisper",
        WIZPER,
        "transcribe_audio",
        "Whisper v3 large (on fal-ai/wizper): detects the language (slower)",
        _translator("whisper", WIZPER, detect=True),
        read_output=_reader("languages"),
    ),
]

PRICES = [PriceHint(WIZPER, 0.0005, "second")]

RECOMMENDATIONS = [
    Recommendation(
        "wizper",
        ("transcribe", "transcription", "speech to text", "subtitles", "captions"),
        "Fast, cheap Whisper v3 transcription with timestamps",
        "audio",
    ),
    Recommendation(
        "whisper",
        ("detect language", "unknown language", "which language"),
        "Detects the language spoken",
        "audio",
        weight=0.8,
    ),
]


async def transcribe_audio(args: TranscribeAudioInput, ctx: ToolContext) -> ToolResult:
    model = ctx.model(args.model)
    await ctx.progress(f"Transcribing with {model.alias}")
    result, call = await ctx.run_model(model, args)
    read = model.read_output or _reader("languages")  # a model another pack adds may not bring a reader
    output = read(result.data).model_copy(
        update={
            "endpoint": model.endpoint_id,
            "model": model.alias,
            "request_id": result.request_id,
            "notes": list(call.notes),
        }
    )
    lines = [f"Transcript by {model.alias} ({model.endpoint_id}), request {result.request_id}:", output.text]
    lines += [f"[{c.start}-{c.end}] {c.text}" for c in output.chunks]
    lines += [f"Note: {note}" for note in call.notes]
    return ToolResult("\n".join(lines), output)


TOOLS = [
    Tool(
        name="transcribe_audio",
        title="Transcribe audio",
        description="Turn speech into text with a fal.ai speech-to-text model (or translate it into "
        "English). Returns the text and its timed chunks.",
        input_model=TranscribeAudioInput,
        handler=transcribe_audio,
        output_model=Transcription,
        hints=ToolHints(read_only=True, idempotent=True),
        category="audio",
        model_field="model",
    ),
]
