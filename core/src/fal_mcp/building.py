"""The one way for each thing a pack's tool does: build an endpoint's input (`EndpointInput`), turn
a fal output into the shared result (`generation_output`), and hand its modules to the core
(`pack_hooks`). Packs import these from `fal_mcp`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import ArgumentError, ToolError
from .types import EndpointCall

if TYPE_CHECKING:
    from types import ModuleType

    from .gateway import FalResult
    from .outputs import GenerationOutput, OutputFile
    from .types import Model


class EndpointInput:
    """One endpoint's input, notes and facts, built from a tool's validated arguments.

        def kontext_input(args) -> EndpointCall:
            req = EndpointInput(args, "kontext", "fal-ai/flux-pro/kontext", __name__)
            req.send(image_url=args.image_url, prompt=args.instruction)
            req.copy("seed")
            req.drop("strength", "does not take it")
            return req.call()

    Tool fields are read by name (missing ones read as None), so one translator serves every tool
    that offers its endpoint. With `endpoint_id` and `package` (any module name of the pack that
    vendors the endpoint's schema), the endpoint's limits are read from that schema, never repeated.
    """

    def __init__(
        self, args: Any, model: str, endpoint_id: str | None = None, package: str | None = None
    ) -> None:
        self.args = args
        self.model = model  # how notes and errors name the model
        self.endpoint_id = endpoint_id
        self.package = package.split(".")[0] if package else None
        self.arguments: dict[str, Any] = {}
        self.notes: list[str] = []
        self.facts: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        return getattr(self.args, name, None)

    def field(self, name: str) -> dict[str, Any]:
        """The endpoint's schema of input field `name` ({} without a vendored schema)."""
        from .input_check import input_field

        if not (self.package and self.endpoint_id):
            return {}
        return input_field(self.package, self.endpoint_id, name)

    def bounds(self, name: str) -> tuple[int, int]:
        field = self.field(name)
        return field["minimum"], field["maximum"]

    def choices(self, name: str) -> list[Any]:
        return list(self.field(name).get("enum", ()))

    def send(self, **fields: Any) -> None:
        """Send each field that has a value; None leaves the endpoint's own default. A text longer
        than the endpoint takes is refused (cutting it would change what is asked for)."""
        for name, value in fields.items():
            limit = self.field(name).get("maxLength")
            if isinstance(value, str) and limit is not None and len(value) > limit:
                raise ArgumentError(
                    name, f"{self.model} takes at most {limit} characters (got {len(value)}); shorten it"
                )
        self.arguments.update({name: value for name, value in fields.items() if value is not None})

    def copy(self, *names: str) -> None:
        """Send tool fields the endpoint names the same way."""
        self.send(**{name: self.get(name) for name in names})

    def note(self, text: str) -> None:
        self.notes.append(text)

    def drop(self, name: str, why: str) -> None:
        """A given argument the model cannot take: not sent, and the result says so."""
        if self.get(name) not in (None, ""):
            self.notes.append(f"{name} was not sent: {self.model} {why}")

    def require(self, name: str, why: str) -> None:
        if self.get(name) in (None, ""):
            raise ArgumentError(name, f"{self.model} {why}")

    def refuse(self, name: str, why: str) -> None:
        if self.get(name) is not None:
            raise ArgumentError(name, f"{self.model} {why}")

    def made(self, seconds: float, capability: str, detail: str = "", asked_field: str = "duration") -> None:
        """Record the length asked of the endpoint (the result's `seconds`); a note when it differs
        from the user's `asked_field`."""
        self.facts["seconds"] = float(seconds)
        asked = self.get(asked_field)
        if asked is not None and abs(seconds - asked) > 0.05:
            detail = f" ({detail})" if detail else ""
            self.notes.append(
                f"{asked_field}: {self.model} cannot make {asked:g} s (it makes {capability}); "
                f"made {seconds:.3g} s{detail} instead, the nearest it can"
            )

    def call(self) -> EndpointCall:
        return EndpointCall(dict(self.arguments), tuple(self.notes), dict(self.facts))


def generation_output(
    model: Model,
    result: FalResult,
    call: EndpointCall | None = None,
    *,
    prompt: str | None = None,
    notes: Iterable[str] = (),
    files: list[OutputFile] | None = None,
    expect: str | None = None,
) -> GenerationOutput:
    """The shared result of a fal generation: `files` (default: every file in the output), the
    seed fal reports, the prompt, `notes` then the call's. A file without a length gets the call's
    `seconds` fact. `expect` (e.g. "video"): no file is a ToolError saying so."""
    from .outputs import GenerationOutput, find_files

    files = find_files(result.data) if files is None else files
    if expect and not files:
        raise ToolError(
            f"{model.endpoint_id} finished but returned no {expect} (fal request {result.request_id})"
        )
    seconds = call.facts.get("seconds") if call is not None else None
    for file in files:
        if file.duration is None:
            file.duration = seconds
    seed = result.data.get("seed") if isinstance(result.data, Mapping) else None
    return GenerationOutput(
        files=files,
        endpoint=model.endpoint_id,
        model=model.alias,
        request_id=result.request_id,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        prompt=prompt,
        notes=[*notes, *(call.notes if call is not None else ())],
    )


def pack_hooks(package: str, *modules: str) -> tuple[Callable[[], list[Any]], ...]:
    """The four hooks of a pack made of tool modules: each module's TOOL (or TOOLS), MODELS, PRICES
    and RECOMMENDATIONS, whichever it has. Modules are named relative to `package` and imported
    when a hook is called, so loading the pack stays cheap.

        register_tools, register_models, register_pricing, register_recommendations = pack_hooks(
            __name__, "text_to_speech", "transcribe_audio")
    """
    from .hookspecs import hookimpl

    def loaded() -> list[ModuleType]:
        from importlib import import_module

        return [import_module(f"{package}.{name}") for name in modules]

    def collect(*names: str) -> Callable[[], list[Any]]:
        def hook() -> list[Any]:
            found: list[Any] = []
            for module in loaded():
                for name in names:
                    value = getattr(module, name, ())
                    found.extend(value if isinstance(value, (list, tuple)) else [value])
            return found

        return hook

    hooks = {
        "register_tools": collect("TOOL", "TOOLS"),
        "register_models": collect("MODELS"),
        "register_pricing": collect("PRICES"),
        "register_recommendations": collect("RECOMMENDATIONS"),
    }
    for name, hook in hooks.items():
        hook.__name__ = hook.__qualname__ = name  # as pluggy and tracebacks name it
    return tuple(hookimpl(hook) for hook in hooks.values())
