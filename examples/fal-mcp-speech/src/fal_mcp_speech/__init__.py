"""fal-mcp-speech: an example pack built only on `fal_mcp`'s public API.

- `text_to_speech`: text to spoken audio (fal-ai/kokoro/american-english);
- `transcribe_audio`: speech to text (fal-ai/wizper, as wizper and as whisper, which detects the language);
- `flux_pro_ultra`: one more model for another pack's tool, `generate_image`.

Each module holds one piece whole (input, models and their translation, handler); this
module only hands their parts to the core through the four hooks.
"""

from fal_mcp import hookimpl

from . import flux_ultra, text_to_speech, transcribe_audio

PARTS = (text_to_speech, transcribe_audio, flux_ultra)


@hookimpl
def register_tools():
    for part in PARTS:
        yield from getattr(part, "TOOLS", ())


@hookimpl
def register_models():
    for part in PARTS:
        yield from part.MODELS


@hookimpl
def register_pricing():
    for part in PARTS:
        yield from part.PRICES


@hookimpl
def register_recommendations():
    for part in PARTS:
        yield from part.RECOMMENDATIONS
