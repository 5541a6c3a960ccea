"""fal-mcp-speech: an example pack built only on `fal_mcp`'s public API.

- `text_to_speech`: text to spoken audio (fal-ai/kokoro/american-english);
- `transcribe_audio`: speech to text (fal-ai/wizper, as wizper and as whisper, which detects the language);
- `flux_ultra`: one more model for another pack's tool, `generate_image`.

Each module holds one piece whole (input, models and their translation, handler); this
module only lists them.
"""

from fal_mcp import pack_hooks

register_tools, register_models, register_pricing, register_recommendations = pack_hooks(
    __name__, "text_to_speech", "transcribe_audio", "flux_ultra"
)
