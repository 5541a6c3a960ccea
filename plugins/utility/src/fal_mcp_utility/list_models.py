"""list_models: the models an assistant can use, from the packs and fal's live catalogue."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fal_mcp import Tool, ToolContext, ToolHints, ToolInput, ToolResult

from .catalog import Entry, all_models, words


class ListModelsInput(ToolInput):
    category: Literal["image", "video", "audio"] | None = Field(None)
    task: str | None = Field(None, max_length=500, description="e.g. 'remove background'")
    search: str | None = Field(None, max_length=500, description="Matched against ids, names, tags")
    limit: int = Field(20, ge=1, le=100)


class ListedModel(BaseModel):
    model_config = ConfigDict(defer_build=True)

    endpoint_id: str
    aliases: list[str] = Field(description="tool:alias names the installed packs offer it under")
    category: str | None
    description: str
    highlighted: bool
    source: Literal["pack", "fal", "pack+fal"]


class ModelListing(BaseModel):
    model_config = ConfigDict(defer_build=True)

    models: list[ListedModel]
    matched: int = Field(description="How many models matched before the limit")
    note: str | None = Field(None, description="Set when fal's catalogue could not be reached")


def _matches(entry: Entry, query_words: set[str]) -> int:
    return len(query_words & words(entry.haystack())) if query_words else 1


async def list_models(args: ListModelsInput, ctx: ToolContext) -> ToolResult:
    entries, note = await all_models(ctx)
    query = words(" ".join(filter(None, (args.task, args.search))))
    scored = [
        (entry, _matches(entry, query))
        for entry in entries
        if args.category is None or entry.category == args.category
    ]
    scored = [(entry, score) for entry, score in scored if score > 0]
    # highlighted first, then the ones a pack offers under an alias, then by how well they match
    scored.sort(
        key=lambda pair: (not pair[0].highlighted, not pair[0].aliases, -pair[1], pair[0].endpoint_id)
    )
    shown = [
        ListedModel(
            endpoint_id=e.endpoint_id,
            aliases=list(e.aliases),
            category=e.category,
            description=e.description.split(". ")[0][:200],
            highlighted=e.highlighted,
            source="pack+fal" if e.aliases and e.from_fal else "pack" if e.aliases else "fal",
        )
        for e, _ in scored[: args.limit]
    ]
    listing = ModelListing(models=shown, matched=len(scored), note=note)
    starred = " (* = highlighted in fal's catalogue)" if any(model.highlighted for model in shown) else ""
    lines = [f"{len(shown)} of {len(scored)} matching models{starred}:" if shown else "No model matched."]
    for model in shown:
        names = f" [{', '.join(model.aliases)}]" if model.aliases else ""
        star = "* " if model.highlighted else ""
        lines.append(f"- {star}{model.endpoint_id}{names} ({model.category or 'other'}): {model.description}")
    if note:
        lines.append(f"Note: {note}")
    return ToolResult("\n".join(lines), listing)


TOOL = Tool(
    name="list_models",
    title="List models",
    description="List fal models: the packs' aliases and fal's catalogue.",
    input_model=ListModelsInput,
    handler=list_models,
    output_model=ModelListing,
    hints=ToolHints(read_only=True, idempotent=True),
    category="utility",
)
