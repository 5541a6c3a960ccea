"""recommend_model: which model suits a task, ranked, each with a score and the reason."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fal_mcp import Tool, ToolContext, ToolError, ToolHints, ToolInput, ToolResult

from .catalog import all_models, resolve_endpoints, words

# How much each kind of evidence counts: a pack's explicit advice beats a word match in fal's catalogue.
ADVICE_WEIGHT, CATALOGUE_WEIGHT, HIGHLIGHT_BONUS = 1.0, 0.25, 0.25


class RecommendModelInput(ToolInput):
    task: str = Field(min_length=1, max_length=1000, description="What you want to make or do")
    category: Literal["image", "video", "audio"] | None = Field(None, description="Only models of this kind")
    limit: int = Field(5, ge=1, le=10, description="How many recommendations, 1-10")


class Recommended(BaseModel):
    model: str = Field(description="Alias (tool:alias) or endpoint id to use")
    endpoint_id: str
    score: float
    reasons: list[str]


class Recommendations(BaseModel):
    task: str
    recommendations: list[Recommended]
    note: str | None = None


async def recommend_model(args: RecommendModelInput, ctx: ToolContext) -> ToolResult:
    task_words, task_text = words(args.task), args.task.lower()
    found: dict[str, Recommended] = {}

    def add(endpoint_id: str, model: str, score: float, reason: str) -> None:
        entry = found.setdefault(
            endpoint_id, Recommended(model=model, endpoint_id=endpoint_id, score=0, reasons=[])
        )
        entry.score = round(entry.score + score, 3)
        entry.reasons.append(reason)

    for advice in ctx.registry.recommendations:
        if args.category and advice.category != args.category:
            continue
        hits = [k for k in advice.keywords if k.lower() in task_text or words(k) & task_words]
        if not hits:
            continue
        try:
            targets = resolve_endpoints(ctx, advice.model)
        except ToolError:  # advice about a model no loaded pack registers
            continue
        for alias, endpoint_id in targets:
            tools = (
                sorted({m.tool for m in ctx.registry.models.values() if m.alias == alias}) if alias else []
            )
            name = f"{tools[0]}:{alias}" if tools else endpoint_id
            add(
                endpoint_id,
                name,
                ADVICE_WEIGHT * advice.weight * len(hits),
                f"{advice.reason} (matches: {', '.join(hits)})",
            )
    entries, note = await all_models(ctx)
    for entry in entries:
        if args.category and entry.category != args.category:
            continue
        overlap = sorted(task_words & words(entry.haystack()))
        if not overlap:
            continue
        score = CATALOGUE_WEIGHT * len(overlap) + (HIGHLIGHT_BONUS if entry.highlighted else 0)
        described = "highlighted by fal; " if entry.highlighted else ""
        add(
            entry.endpoint_id,
            entry.aliases[0] if entry.aliases else entry.endpoint_id,
            score,
            f"{described}its catalogue entry mentions {', '.join(overlap)}",
        )
    ranked = sorted(found.values(), key=lambda r: (-r.score, r.endpoint_id))[: args.limit]
    result = Recommendations(task=args.task, recommendations=ranked, note=note)
    if not ranked:
        return ToolResult(f"No model matched {args.task!r}. Try other words, or list_models.", result)
    lines = [f"For {args.task!r}:"]
    for number, item in enumerate(ranked, 1):
        lines.append(
            f"{number}. {item.model} ({item.endpoint_id}), score {item.score:g}: {'; '.join(item.reasons)}"
        )
    if note:
        lines.append(f"Note: {note}")
    return ToolResult("\n".join(lines), result)


TOOL = Tool(
    name="recommend_model",
    title="Recommend a model",
    description="Recommend fal.ai models for a task, ranked by score, each with the reasons: the installed "
    "packs' advice plus a search of fal's catalogue.",
    input_model=RecommendModelInput,
    handler=recommend_model,
    output_model=Recommendations,
    hints=ToolHints(read_only=True, idempotent=True),
    category="utility",
)
