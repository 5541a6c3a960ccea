"""What the utility tools know of models: the packs' registrations and fal's live catalogue."""

from __future__ import annotations

from dataclasses import dataclass

from fal_mcp import ToolContext, ToolError

# fal's catalogue categories, grouped the way our tools speak of them.
CATEGORY_GROUPS = {
    "image": (
        "text-to-image",
        "image-to-image",
        "image-editing",
        "image-to-3d",
        "upscaling",
        "background-removal",
        "inpainting",
        "outpainting",
    ),
    "video": ("text-to-video", "image-to-video", "video-to-video", "video-editing"),
    "audio": (
        "text-to-audio",
        "text-to-speech",
        "speech-to-text",
        "audio-to-audio",
        "text-to-music",
        "music",
    ),
}
PAGE_SIZE = 100
MAX_PAGES = 50  # a bound on one listing, far above fal's catalogue today


def group_of(fal_category: str) -> str | None:
    for group, categories in CATEGORY_GROUPS.items():
        if fal_category in categories or fal_category.endswith(f"-to-{group}"):
            return group
    return None


@dataclass
class Entry:
    endpoint_id: str
    category: str | None  # image | video | audio
    description: str
    aliases: tuple[str, ...] = ()  # "tool:alias" for models a pack registered
    name: str = ""
    tags: tuple[str, ...] = ()
    highlighted: bool = False
    from_fal: bool = False

    def haystack(self) -> str:
        return " ".join((self.endpoint_id, self.name, self.description, *self.tags, *self.aliases)).lower()


def registered(ctx: ToolContext) -> dict[str, Entry]:
    """The models every loaded pack registered, by endpoint id."""
    entries: dict[str, Entry] = {}
    for model in ctx.registry.models.values():
        entry = entries.setdefault(
            model.endpoint_id, Entry(model.endpoint_id, model.category, model.description)
        )
        entry.aliases += (f"{model.tool}:{model.alias}",)
    return entries


async def live_catalogue(ctx: ToolContext) -> list[Entry]:
    """Every page of fal's model catalogue (cached for FAL_MCP_CATALOG_TTL). ToolError if unreachable."""
    entries, cursor = [], None
    for _ in range(MAX_PAGES):
        params = [("limit", PAGE_SIZE), ("status", "active")] + ([("cursor", cursor)] if cursor else [])
        page = await ctx.platform("GET", "/models", params=params, ttl=ctx.settings.catalog_ttl)
        for item in page.get("models", []):
            meta = item.get("metadata") or {}  # fal nests display fields under metadata
            entries.append(
                Entry(
                    endpoint_id=item["endpoint_id"],
                    category=group_of(meta.get("category", "")),
                    description=" ".join(str(meta.get("description", "")).split()),
                    name=meta.get("display_name", ""),
                    tags=tuple(meta.get("tags") or ()),
                    highlighted=bool(meta.get("highlighted")),
                    from_fal=True,
                )
            )
        cursor = page.get("next_cursor")
        if not page.get("has_more") or not cursor:
            break
    return entries


async def all_models(ctx: ToolContext) -> tuple[list[Entry], str | None]:
    """Registered models merged with fal's catalogue; the note says when fal could not be reached."""
    merged = registered(ctx)
    try:
        live = await live_catalogue(ctx)
    except ToolError as exc:
        return list(merged.values()), (
            f"fal's catalogue could not be reached ({exc}); showing only the models "
            "the installed packs registered"
        )
    for entry in live:
        mine = merged.get(entry.endpoint_id)
        if mine:
            entry.aliases = mine.aliases
            entry.category = entry.category or mine.category
            entry.description = entry.description or mine.description
        merged[entry.endpoint_id] = entry
    return list(merged.values()), None


def words(text: str) -> set[str]:
    return {
        word for word in "".join(c if c.isalnum() else " " for c in text.lower()).split() if len(word) > 2
    }


def resolve_endpoints(ctx: ToolContext, name: str) -> list[tuple[str | None, str]]:
    """(alias, endpoint id) pairs a user's model name stands for: an endpoint id as is, or every tool's
    model of that alias. ToolError lists the known aliases for an unknown one."""
    if "/" in name:
        return [(None, name)]
    found = sorted({(m.alias, m.endpoint_id) for m in ctx.registry.models.values() if m.alias == name})
    if not found:
        known = ", ".join(sorted({m.alias for m in ctx.registry.models.values()})) or "none"
        raise ToolError(
            f"unknown model {name!r}: give an endpoint id (owner/app, e.g. fal-ai/flux/dev) or one "
            f"of the aliases: {known}"
        )
    return found
