"""recommend_model: which tool and model suit a task, ranked, each with a score and the reasons.

How a task is read:

* Its words are lower-cased and stemmed ("removing", "removal" and "remove" are one word), and small
  words ("the", "my", "please") are dropped. A few words also stand for their medium: "picture" and
  "selfie" for image, "clip" for video, "song" for music (a match through that counts half), and
  "9:16" for an aspect ratio.
* A media noun the task points at ("this photo", "my clip", "from product photo") is the input, not
  what to make: it tells which tools take it (a tool that needs such an input gains; one that needs
  an input the task never mentions, or takes none of those it mentions, keeps half its score), and
  its words do not count as a wish for a model ("product photo" must not pull towards a
  photorealistic image model when the photo is the input), only for what a tool says it takes.
* A keyword phrase matches only whole and in order ("remove background", not "background" alone), and
  counts more than a word. A word inside a phrase matched for another tool is that phrase's: in
  "background music", "background" is no evidence for remove_background.

What counts, for each (tool, model) candidate:

* the packs' advice (`Recommendation`): for a model, by alias or endpoint id, for every tool that
  offers it; or, when its model names a tool, for the tool whichever model runs (so that what a tool
  does, "cut out", does not favour one of its models over another fitter one, "person");
* a model the task names ("with kling pro");
* the tool's own vocabulary, from the tool definition itself: its name and title (what it does) count
  most, its description and input fields (their names and choices) less, each word weighted by how
  few tools use it, so that "logo", "watermark" or "instagram" say more than "image"; the words of a
  name that says two things ("remove background") count fully only said together;
* whether the tool takes the input the task points at;
* the model's description, and fal's catalogue entry for models no pack registers.

So a tool's intent ("remove background") outweighs a model's adjectives ("product photo"). A tool
that registers no model (one done locally, or one that borrows another tool's models) is itself a
candidate; among equals a tool's default model comes first. A task nothing matches gets no
recommendation at all, never a guess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fal_mcp import Tool, ToolContext, ToolHints, ToolInput, ToolResult

from .catalog import all_models

# How much each kind of evidence counts. A pack's advice and a tool's name or title are the strong
# evidence; the rest breaks ties and finds what no pack advises.
ADVICE_WEIGHT = 1.0  # per advice keyword matched, times the advice's weight
NAMED_WEIGHT = 2.0  # the task names the model's alias
PHRASE_BONUS = 0.5  # per extra word of a keyword phrase matched whole
SYNONYM_FACTOR = 0.5  # a match only through a medium synonym ("picture" for image)
TOOL_NAME_WEIGHT = 2.0  # a word of the tool's name or title, times its rarity among tools
TOOL_TEXT_WEIGHT = 0.75  # a word of the tool's description or input fields, times its rarity squared
TOOL_TEXT_CAP = 2.5  # at most this much from the description and input fields
INPUT_WEIGHT = 1.5  # the tool takes the input the task points at
INPUT_MISMATCH_FACTOR = 0.5  # the score's share left to a tool needing an input the task does not
# mention, or taking none of the inputs it mentions
MODEL_TEXT_WEIGHT = 0.25  # a word of the model's description or catalogue entry
HIGHLIGHT_BONUS = 0.25  # fal highlights the model (for a catalogue match)

GENERATION = ("image", "video", "audio")

# Dropped before matching: articles, pronouns, helpers. Prepositions that carry intent ("into",
# "from", "in") are kept.
STOPWORDS = frozenset(
    """a an the and or of to for with on at by as is are be it its this that these those some any so
    i me my we our you your he him his she her they them their please can could would should will want
    need needs like just also very really get make made makes making using use do does give let way
    only one two three e g eg every each all""".split()
)
# Words a tool's description or input fields use whatever the tool does.
GENERIC_WORDS = """return url uri fal ai endpoint request id model seed prompt num number output input default
    true false null none string integer option setting say result use new time check size exact always
    first"""

# Media nouns: what a task may point at as its input, and the medium they stand for.
MEDIA_NOUNS = {
    "image": """image images picture pictures pic pics photo photos photograph photographs selfie
        selfies snapshot snapshots headshot headshots screenshot screenshots sketch sketches drawing
        drawings painting paintings artwork artworks render renders logo logos portrait portraits shot
        shots banner banners scan scans illustration illustrations poster posters""".split(),
    "video": "video videos clip clips footage film films movie movies recording recordings".split(),
}
# The plainest of them, which "the" and "from" may point at too ("extend the image").
PLAIN_MEDIA_NOUNS = frozenset(
    "image images picture pictures photo photos photograph video videos clip clips footage".split()
)
# Words that point at something the user has: "this photo", "my clip".
POINTERS = frozenset(
    "this these that my our your his her their existing attached uploaded given same every each all".split()
)
WEAK_POINTERS = frozenset(("the", "from"))
# After these verbs, "the image" is what to make, not an input.
CREATION_VERBS = frozenset(
    "generate create build design draw render produce paint compose write describe specify imagine".split()
)

# Words that also stand for their medium, so "a picture of a cat" reaches image advice. Painting,
# logo and the like name an image to make; clip and footage a video; song and jingle music.
MEDIUM_SYNONYMS = {
    "image": """picture pic photo photograph selfie snapshot painting drawing illustration artwork
        sketch render poster portrait wallpaper icon""".split(),
    "video": "clip footage film movie animation".split(),
    "music": "song tune soundtrack jingle beat melody track".split(),
}
# One spelling for words that mean the same here.
SPELLINGS = {
    "colour": "color",
    "colours": "colors",
    "grey": "gray",
    "stylise": "stylize",
    "stylised": "stylized",
    "erase": "remove",
    "delete": "remove",
    "eliminate": "remove",
    "removal": "remove",
}
# What a tool may make, as the words of its name say it.
OUTPUT_MEDIA = frozenset(("imag", "video", "music", "audio"))
# Kept for phrases ("turn into", "cut out"), never evidence on their own.
PREPOSITIONS = frozenset("in into from out off up down over under onto about without no".split())
RATIO = re.compile(r"\d+:\d+")

TOKEN = re.compile(r"\d+:\d+|\d+(?:\.\d+)?x\b|[a-z0-9]+")
# Inflections first, then a few derivations; "er" is left alone (poster is not post, corner not corn).
INFLECTIONS = (("ies", "y"), ("ied", "y"), ("ings", ""), ("ing", ""), ("ed", ""), ("s", ""))
DERIVATIONS = (
    ("ational", "ate"),
    ("ation", "ate"),
    ("ition", "ite"),
    ("ement", ""),
    ("ment", ""),
    ("ness", ""),
    ("ly", ""),
)


def stem(word: str) -> str:
    """A light English stemmer, enough to make a word's forms meet: remove, removes, removing -> remov;
    variations, variation -> variat; cropped, cropping -> crop."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, replacement in INFLECTIONS:
        if not word.endswith(suffix) or len(word) - len(suffix) < 3 or word.endswith(("ss", "eed")):
            continue
        word = word[: -len(suffix)] + replacement
        if suffix in ("ing", "ings", "ed") and word[-1] == word[-2] and word[-1] not in "lsz":
            word = word[:-1]  # cropp -> crop
        break
    for suffix, replacement in DERIVATIONS:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


GENERIC = frozenset(stem(word) for word in GENERIC_WORDS.split())
STEMMED_SYNONYMS = {stem(w): stem(medium) for medium, ws in MEDIUM_SYNONYMS.items() for w in ws}


def synonym_of(word: str) -> str | None:
    if RATIO.fullmatch(word):  # 9:16 is an aspect ratio
        return "ratio"
    return STEMMED_SYNONYMS.get(word)


def raw_tokens(text: str) -> list[str]:
    return [SPELLINGS.get(t, t) for t in TOKEN.findall(text.lower())]


def stems(text: str) -> list[str]:
    """The content words of `text`, stemmed: how keywords and tool vocabularies are compared."""
    return [stem(t) for t in raw_tokens(text) if t not in STOPWORDS and not t.isdigit() and len(t) > 1]


@dataclass
class Position:
    word: str  # stemmed
    raw: str
    synonym: str | None = None  # the medium it also stands for
    is_input: bool = False  # part of a reference to the user's input ("this photo")


@dataclass
class Task:
    """A task as the ranking reads it."""

    positions: list[Position]
    inputs: dict[str, str]  # medium -> the words that point at it ("image" -> "this photo")

    @classmethod
    def read(cls, text: str) -> Task:
        tokens = raw_tokens(text)
        inputs: dict[str, str] = {}
        referenced: set[int] = set()
        for n, token in enumerate(tokens):
            strong = token in POINTERS
            if not strong and token not in WEAK_POINTERS:
                continue
            previous = tokens[n - 1] if n else ""
            if previous == "for":  # "music for my video": what it is for, not its input
                continue
            if token == "the" and previous in CREATION_VERBS:  # "build the image": the output
                continue
            for end in range(n + 1, min(n + 4, len(tokens))):  # up to two words between
                noun = tokens[end]
                medium = next((m for m, nouns in MEDIA_NOUNS.items() if noun in nouns), None)
                if medium and (strong or noun in PLAIN_MEDIA_NOUNS):
                    inputs.setdefault(medium, " ".join(tokens[n + (token == "from") : end + 1]))
                    referenced.update(range(n, end + 1))
                    break
                if tokens[end] in STOPWORDS or tokens[end] in POINTERS:
                    break
        positions = []
        for n, token in enumerate(tokens):
            if token in STOPWORDS or token.isdigit() or len(token) < 2:
                continue
            word = stem(token)
            positions.append(Position(word, token, synonym_of(word), n in referenced))
        return cls(positions, inputs)

    def evidence(self, spot: int) -> bool:
        """Whether a word may count on its own: not the input's, not a bare preposition."""
        position = self.positions[spot]
        return not position.is_input and position.raw not in PREPOSITIONS

    def find(self, words: list[str]) -> Iterator[tuple[list[int], bool]]:
        """Where a keyword's stemmed words occur, in order, with nothing between them but the input's
        own words; each hit with whether it needed a medium synonym (single words only: a phrase must
        be said as it is). A single word never matches the input's words ("this photo" is what to
        work on, not a wish for photos) nor a bare preposition."""
        for start in range(len(self.positions)):
            at, used_synonym, ok = start, False, True
            spots: list[int] = []
            for k, word in enumerate(words):
                while k and at < len(self.positions) and self.positions[at].is_input:
                    if self.positions[at].word == word:
                        break
                    at += 1
                if at >= len(self.positions):
                    ok = False
                    break
                here = self.positions[at]
                if here.word == word:
                    pass
                elif here.synonym == word and len(words) == 1:
                    used_synonym = True
                else:
                    ok = False
                    break
                spots.append(at)
                at += 1
            if not ok:
                continue
            if len(words) == 1 and not self.evidence(spots[0]):
                continue
            yield spots, used_synonym


@dataclass
class Match:
    """One piece of evidence found in the task."""

    spots: list[int]
    tools: frozenset[str]  # the tools it speaks for (empty: any)
    score: float
    label: str


@dataclass
class Candidate:
    tool: str | None
    alias: str | None
    endpoint_id: str | None
    score: float = 0.0
    reasons: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.tool and self.alias:
            return f"{self.tool}:{self.alias}"
        return self.tool or self.endpoint_id or "?"


class RecommendModelInput(ToolInput):
    task: str = Field(min_length=1, max_length=1000)
    category: Literal["image", "video", "audio"] | None = Field(None)
    limit: int = Field(5, ge=1, le=10)


class Recommended(BaseModel):
    model_config = ConfigDict(defer_build=True)

    model: str = Field(description="tool:alias to use, a tool that needs no model choice, or an endpoint id")
    tool: str | None = Field(
        None, description="The tool to call (None: a fal model no tool offers; run_model)"
    )
    endpoint_id: str | None = Field(description="The fal endpoint (None: the tool works locally)")
    score: float
    reasons: list[str]


class Recommendations(BaseModel):
    model_config = ConfigDict(defer_build=True)

    task: str
    recommendations: list[Recommended]
    note: str | None = None


# --- what each tool is about, read from its definition ---------------------------------------------


@dataclass
class ToolProfile:
    tool: Tool
    name_words: set[str]  # from its name and title
    text_words: set[str]  # from its description and input fields
    needs: set[str]  # media it must be given
    takes: set[str]  # media it can be given


def schema_words(schema: Any) -> Iterator[str]:
    """The names and choices of every input field, nested ones included (not their descriptions)."""
    if isinstance(schema, dict):
        for name, sub in (schema.get("properties") or {}).items():
            yield name
            yield from schema_words(sub)
        for value in schema.get("enum") or ():
            if isinstance(value, str):
                yield value
        for key in ("items", "anyOf", "oneOf", "allOf", "$defs"):
            value = schema.get(key)
            subs = value.values() if isinstance(value, dict) and key == "$defs" else value
            for sub in subs if isinstance(subs, (list, tuple)) else [subs] if subs else []:
                yield from schema_words(sub)


def media_of(field_name: str) -> str | None:
    if not field_name.endswith(("_url", "_urls")):
        return None
    for word, medium in (("video", "video"), ("audio", "audio"), ("image", "image"), ("mask", "image")):
        if word in field_name:
            return medium
    return None


def profile(tool: Tool) -> ToolProfile:
    try:
        schema = tool.input_model.model_json_schema()
    except Exception:  # a tool whose schema cannot be built is still known by its name and text
        schema = {}
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    needs = {m for name in required if (m := media_of(name))}
    takes = {m for name in properties if (m := media_of(name))}
    name_words = set(name_stems(tool.name.replace("_", " ")) + name_stems(tool.title)) - GENERIC
    text = " ".join([tool.description, *(w.replace("_", " ") for w in schema_words(schema))])
    text_words = set(stems(text)) - GENERIC - PREPOSITIONS - name_words
    return ToolProfile(tool, name_words, text_words, needs, takes)


def name_stems(name: str) -> list[str]:
    """The words of a tool's name or title that say what it does and makes: in "generate video from
    image", the image is what it starts from, not what it makes."""
    words = stems(name)
    if "from" in words:
        at = words.index("from")
        words = words[:at] + [w for w in words[at + 1 :] if w not in OUTPUT_MEDIA]
    return [w for w in words if w not in PREPOSITIONS]


def rarity(profiles: Iterable[ToolProfile]) -> dict[str, float]:
    """How few of the tools use each word, 0 (all of them) to 1 (one tool)."""
    profiles = list(profiles)
    counts: dict[str, int] = {}
    for item in profiles:
        for word in item.name_words | item.text_words:
            counts[word] = counts.get(word, 0) + 1
    total = max(len(profiles), 2)
    return {word: math.log(total / count) / math.log(total) for word, count in counts.items()}


# --- scoring --------------------------------------------------------------------------------------


def keyword_score(spots: list[int], used_synonym: bool) -> float:
    score = 1 + PHRASE_BONUS * (len(spots) - 1)
    return score * (SYNONYM_FACTOR if used_synonym else 1)


def claimed(spot: int, phrases: list[Match], tool: str | None) -> bool:
    """Whether the word at `spot` belongs to a phrase matched for other tools: then it is no evidence
    on its own for `tool` ("background" in "background music" says nothing for remove_background)."""
    return any(spot in phrase.spots and phrase.tools and tool not in phrase.tools for phrase in phrases)


async def recommend_model(args: RecommendModelInput, ctx: ToolContext) -> ToolResult:
    task = Task.read(args.task)
    registry = ctx.registry
    profiles = {
        t.name: profile(t)
        for t in registry.tools.values()
        if t.category in GENERATION and (not args.category or t.category == args.category)
    }
    weights = rarity(profiles.values())

    # The candidates: every registered model of a generation tool, and every such tool without one.
    candidates: dict[tuple[str | None, str | None, str | None], Candidate] = {}
    by_alias: dict[str, list[Candidate]] = {}
    by_endpoint: dict[str, list[Candidate]] = {}
    for model in registry.models.values():
        if model.tool not in profiles:
            continue
        candidate = Candidate(model.tool, model.alias, model.endpoint_id)
        candidates[(model.tool, model.alias, None)] = candidate
        by_alias.setdefault(model.alias, []).append(candidate)
        by_endpoint.setdefault(model.endpoint_id, []).append(candidate)
    for name in profiles:
        if not registry.models_for(name):
            candidates[(name, None, None)] = Candidate(name, None, None)

    # Advice: find every keyword first, so that a phrase can claim its words from other tools.
    advice_matches: list[tuple[str, list[Candidate], Match]] = []
    for advice in registry.recommendations:
        if args.category and advice.category != args.category:
            continue
        if advice.model in profiles:  # advice about a tool, whichever of its models runs
            targets = [c for c in candidates.values() if c.tool == advice.model]
        elif "/" in advice.model:
            targets = by_endpoint.get(advice.model, [])
        else:
            targets = by_alias.get(advice.model, [])
        if "/" in advice.model and not targets:  # advice about a model no pack registers
            unregistered = Candidate(None, None, advice.model)
            targets = [candidates.setdefault((None, None, advice.model), unregistered)]
        if not targets:
            continue
        tools = frozenset(c.tool for c in targets if c.tool)
        for keyword in advice.keywords:
            words = stems(keyword)
            if not words:
                continue
            best = max(task.find(words), key=lambda hit: keyword_score(*hit), default=None)
            if best:
                match = Match(best[0], tools, advice.weight * ADVICE_WEIGHT * keyword_score(*best), keyword)
                advice_matches.append((advice.reason, targets, match))
    phrases = [match for _, _, match in advice_matches if len(match.spots) > 1]

    def credit(candidate: Candidate, score: float, reason: str) -> None:
        candidate.score = round(candidate.score + score, 3)
        candidate.reasons.append(reason)

    # The advice, as reasons: one line per advice and candidate.
    grouped: dict[tuple[int, str], tuple[Candidate, float, list[str]]] = {}
    for advice_reason, targets, match in advice_matches:
        for candidate in targets:
            if len(match.spots) == 1 and claimed(match.spots[0], phrases, candidate.tool):
                continue
            key = (id(candidate), advice_reason)
            _, total, hits = grouped.get(key, (candidate, 0.0, []))
            grouped[key] = (candidate, total + match.score, [*hits, match.label])
    for (_, advice_reason), (candidate, total, hits) in grouped.items():
        credit(candidate, total, f"{advice_reason} (matches: {', '.join(hits)})")

    # A model the task names ("with kling", "using flux pro"; "kling pro" names kling_pro, not kling).
    named = {
        candidate.alias: set(spots)
        for candidate in candidates.values()
        if candidate.alias
        for spots, _ in task.find(stems(re.sub(r"[_.]", " ", candidate.alias)))
    }
    for candidate in candidates.values():
        spots = named.get(candidate.alias or "")
        if spots and not any(spots < other for other in named.values()):
            credit(candidate, NAMED_WEIGHT, f"you named {candidate.alias}")

    # The tools' own vocabulary and inputs.
    tool_scores = {name: tool_evidence(task, item, weights, phrases) for name, item in profiles.items()}

    # The models' own descriptions, and fal's catalogue for the models no pack registers.
    entries, note = await all_models(ctx)
    registered = {c.endpoint_id for c in candidates.values() if c.tool}
    models = {(m.tool, m.alias): m for m in registry.models.values()}
    for candidate in list(candidates.values()):
        if not candidate.tool:
            continue
        evidence = bool(candidate.reasons)
        score, factor, reasons, spoke = tool_scores[candidate.tool]
        if candidate.alias:
            model = models[(candidate.tool, candidate.alias)]
            overlap = described_by(task, model.description)
            if overlap:
                credit(
                    candidate,
                    MODEL_TEXT_WEIGHT * len(overlap),
                    f"its description mentions {', '.join(overlap)}",
                )
                evidence = True
        if evidence or spoke:
            candidate.reasons.extend(reasons)
            candidate.score = round((candidate.score + score) * factor, 3)
    for entry in entries:
        if entry.endpoint_id in registered or (args.category and entry.category != args.category):
            continue
        overlap = described_by(task, entry.haystack())
        if not overlap:
            continue
        unregistered = candidates.setdefault(
            (None, None, entry.endpoint_id), Candidate(None, None, entry.endpoint_id)
        )
        highlighted = "highlighted by fal; " if entry.highlighted else ""
        credit(
            unregistered,
            MODEL_TEXT_WEIGHT * len(overlap) + (HIGHLIGHT_BONUS if entry.highlighted else 0),
            f"{highlighted}its catalogue entry mentions {', '.join(overlap)}",
        )

    # Only what some word of the task spoke for; a tool's default model first among equals.
    defaults = {(m.tool, m.alias) for m in registry.models.values() if m.default}
    found = [c for c in candidates.values() if c.reasons and c.score > 0]
    ranked = sorted(
        found,
        key=lambda c: (-c.score, (c.tool, c.alias) not in defaults, c.tool is None, c.name),
    )[: args.limit]
    result = Recommendations(
        task=args.task,
        recommendations=[
            Recommended(
                model=c.name, tool=c.tool, endpoint_id=c.endpoint_id, score=c.score, reasons=c.reasons
            )
            for c in ranked
        ],
        note=note,
    )
    if not ranked:
        return ToolResult(f"No model matched {args.task!r}. Try other words, or list_models.", result)
    lines = [f"For {args.task!r}:"]
    for number, item in enumerate(ranked, 1):
        where = f" ({item.endpoint_id})" if item.endpoint_id else " (done locally)" if item.tool else ""
        lines.append(f"{number}. {item.name}{where}, score {item.score:g}: {'; '.join(item.reasons)}")
    if note:
        lines.append(f"Note: {note}")
    return ToolResult("\n".join(lines), result)


def tool_evidence(
    task: Task, item: ToolProfile, weights: dict[str, float], phrases: list[Match]
) -> tuple[float, float, list[str], bool]:
    """How well the task fits what a tool does and takes: (score to add, factor to scale the
    candidate's score by, reasons, whether anything spoke for the tool). A tool whose name says two
    distinct things ("remove background") must hear them together: apart they count half, one of
    them alone a quarter."""
    name, score, reasons = item.tool.name, 0.0, []
    distinctive = {w for w in item.name_words if weights.get(w, 0) >= 0.5}
    named: dict[int, tuple[str, float]] = {}
    described: list[str] = []
    text_score = 0.0
    for spot, position in enumerate(task.positions):
        if claimed(spot, phrases, name):
            continue
        if not task.evidence(spot):
            # The input's own words may still match what a tool says it takes ("my logo", and
            # compose_images lays a logo on an image), never what it makes.
            if position.is_input and position.word in item.text_words:
                text_score += TOOL_TEXT_WEIGHT * weights.get(position.word, 0) ** 2
                described.append(position.raw)
            continue
        if position.word in item.name_words:
            named[spot] = (position.word, 1.0)
        elif position.synonym in item.name_words:
            named[spot] = (position.synonym or "", SYNONYM_FACTOR)
        elif position.word in item.text_words:
            text_score += TOOL_TEXT_WEIGHT * weights.get(position.word, 0) ** 2
            described.append(position.raw)
    heard = {word for word, _ in named.values()}
    for spot, (word, factor) in named.items():
        if len(distinctive) > 1 and word in distinctive:
            partners = distinctive - {word}
            if any(named.get(near, ("", 0))[0] in partners for near in (spot - 1, spot + 1)):
                pass  # said together: "remove the background", "background removal"
            elif partners & heard:
                factor *= 0.5  # both said, apart: "remove the person in the background"
            else:
                factor *= 0.25  # only half of what the tool does: "erase the power lines"
        score += TOOL_NAME_WEIGHT * weights.get(word, 0) * factor
    score += min(text_score, TOOL_TEXT_CAP)
    if named:
        words = ", ".join(dict.fromkeys(task.positions[spot].raw for spot in named))
        reasons.append(f"what {name} does ({item.tool.title}): {words}")
    if described:
        reasons.append(f"{name}'s description and inputs mention {', '.join(dict.fromkeys(described))}")
    # Taking the input the task points at is evidence on its own: "make her smile in this portrait"
    # says little else, and the tools that take a portrait are the ones to consider.
    spoke = bool(named or described or set(task.inputs) & item.takes)
    for medium, words in task.inputs.items():
        if medium in item.needs:
            score += INPUT_WEIGHT
            reasons.append(f"{name} takes the {medium} you mention ({words!r})")
        elif medium in item.takes:
            score += INPUT_WEIGHT / 2
            reasons.append(f"{name} can take the {medium} you mention ({words!r})")
    factor = 1.0
    if task.inputs and not set(task.inputs) & item.takes:
        factor *= INPUT_MISMATCH_FACTOR
        reasons.append(f"{name} takes no {' or '.join(sorted(task.inputs))}, which the task starts from")
    for medium in sorted(item.needs - set(task.inputs)):
        factor *= INPUT_MISMATCH_FACTOR
        reasons.append(f"{name} needs an input {medium}, which the task does not mention")
    return score, factor, reasons, spoke


def described_by(task: Task, text: str) -> list[str]:
    """The task's own words (not its input's) that a description uses."""
    vocabulary = set(stems(text)) - GENERIC
    return sorted({p.raw for n, p in enumerate(task.positions) if task.evidence(n) and p.word in vocabulary})


TOOL = Tool(
    name="recommend_model",
    title="Recommend a model",
    description="The best tools and models for a task, with reasons.",
    input_model=RecommendModelInput,
    handler=recommend_model,
    output_model=Recommendations,
    hints=ToolHints(read_only=True, idempotent=True),
    category="utility",
)
