"""Finding and loading packs: entry points of the group `fal_mcp`, loaded once.

Each pack is loaded under its own try/except. A pack that fails to import,
implements a hook that does not exist, yields something that is not the
hook's dataclass, or registers a tool or model alias another pack already
registered is reported and left out; the others still serve. Set
FAL_MCP_STRICT_PLUGINS=1 to make any of that fatal.

A name in FAL_MCP_PLUGINS that is no installed pack (a typo: `imge`) is a configuration error: the
server would otherwise start with fewer tools than asked for. One in FAL_MCP_DISABLE_PLUGINS is
warned about (disabling a pack that is not installed is harmless, but a typo there keeps it on).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .config import ConfigError, Settings
from .errors import scrub, shown
from .hookspecs import HOOK_TYPES, PROJECT
from .types import Model, PriceHint, Recommendation, Tool

log = logging.getLogger(__name__)


class PluginError(RuntimeError):
    """A pack could not be loaded (raised only in strict mode)."""


@dataclass
class Pack:
    name: str
    distribution: str
    version: str
    status: str = "active"  # active | disabled | failed
    error: str | None = None
    tools: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version}"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "tools": len(self.tools),
            "models": len(self.models),
        }


@dataclass
class Contributions:
    tools: list[Tool] = field(default_factory=list)
    models: list[Model] = field(default_factory=list)
    prices: list[PriceHint] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)


@dataclass
class Registry:
    """Everything the loaded packs registered, with the pack behind each item."""

    packs: list[Pack] = field(default_factory=list)
    tools: dict[str, Tool] = field(default_factory=dict)
    tool_packs: dict[str, Pack] = field(default_factory=dict)
    models: dict[tuple[str, str], Model] = field(default_factory=dict)
    model_packs: dict[tuple[str, str], Pack] = field(default_factory=dict)
    prices: list[PriceHint] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)

    def models_for(self, tool: str) -> list[Model]:
        return [model for (tool_name, _), model in self.models.items() if tool_name == tool]

    def default_model(self, tool: str) -> Model | None:
        models = self.models_for(tool)
        return next((m for m in models if m.default), models[0] if models else None)

    def resolve_model(self, tool: str, name: str | None) -> Model:
        """The model a tool call asked for, by alias or endpoint id; ValueError lists the choices."""
        models = self.models_for(tool)
        if not models:
            raise ValueError(f"no model is registered for {tool}; install or enable a pack that provides one")
        if name is None:
            return self.default_model(tool)  # type: ignore[return-value]
        for model in models:
            if name in (model.alias, model.endpoint_id):
                return model
        choices = ", ".join(sorted(m.alias for m in models))
        raise ValueError(f"unknown model {shown(name)}; choose one of: {choices}")

    def _check_conflicts(self, pack: Pack, found: Contributions) -> None:
        seen_tools: set[str] = set()
        for tool in found.tools:
            if tool.name in self.tools:
                other = self.tool_packs[tool.name]
                raise PluginError(f"tool {tool.name!r} is registered by both {other.label} and {pack.label}")
            if tool.name in seen_tools:
                raise PluginError(f"tool {tool.name!r} is registered twice by {pack.label}")
            seen_tools.add(tool.name)
        seen_models: set[tuple[str, str]] = set()
        for model in found.models:
            key = (model.tool, model.alias)
            if key in self.models:
                other = self.model_packs[key]
                raise PluginError(
                    f"model alias {model.alias!r} of tool {model.tool!r} is registered by "
                    f"both {other.label} and {pack.label}"
                )
            if key in seen_models:
                raise PluginError(
                    f"model alias {model.alias!r} of tool {model.tool!r} is registered twice by {pack.label}"
                )
            seen_models.add(key)

    def add(self, pack: Pack, found: Contributions) -> None:
        """Merge one pack's contributions, all or nothing."""
        self._check_conflicts(pack, found)
        for tool in found.tools:
            self.tools[tool.name] = tool
            self.tool_packs[tool.name] = pack
            pack.tools.append(tool.name)
        for model in found.models:
            self.models[(model.tool, model.alias)] = model.with_tool_category(self.tools.get(model.tool))
            self.model_packs[(model.tool, model.alias)] = pack
            pack.models.append(f"{model.tool}:{model.alias}")
        self.prices.extend(found.prices)
        self.recommendations.extend(found.recommendations)


@dataclass(frozen=True)
class _Entry:
    """An entry point of the group and its distribution's name and version, read once: each read of
    `EntryPoint.dist.name` or `.version` parses the distribution's METADATA again."""

    point: EntryPoint
    distribution: str  # "" without a distribution
    version: str

    @classmethod
    def of(cls, point: EntryPoint) -> _Entry:
        if point.dist is None:
            return cls(point, "", "?")
        metadata = point.dist.metadata  # what .name and .version read
        return cls(point, metadata["Name"], metadata["Version"])

    @property
    def name(self) -> str:
        return self.point.name


def _wanted(entry: _Entry, names: Iterable[str]) -> bool:
    return entry.name in names or entry.distribution in names


def _check_names(entries: list[_Entry], settings: Settings) -> None:
    """Every name in FAL_MCP_PLUGINS and FAL_MCP_DISABLE_PLUGINS must match a pack as `_wanted` matches
    them (pack or distribution name), or be the core's own pack: refused, resp. warned about, otherwise."""
    packs = sorted({CORE_PACK, *(entry.name for entry in entries)})
    known = {CORE_PACK, "fal-mcp-core"}
    for entry in entries:
        known.add(entry.name)
        if entry.distribution:
            known.add(entry.distribution)

    def unknown(setting: str, names: Iterable[str]) -> str | None:
        missing = sorted(name for name in names if name not in known)
        if not missing:
            return None
        import difflib

        hints = []
        for name in missing:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        which = "names an unknown pack" if len(missing) == 1 else "names unknown packs"
        return (
            f"{setting} {which}: {', '.join(hints)}. The installed packs are: {', '.join(packs)} "
            "(a pack's distribution name works too)"
        )

    if settings.plugins_allowed is not None:
        message = unknown("FAL_MCP_PLUGINS", settings.plugins_allowed)
        if message:
            raise ConfigError(message)
    message = unknown("FAL_MCP_DISABLE_PLUGINS", settings.plugins_blocked)
    if message:
        log.warning("%s; the unknown names are ignored", message)


def _collect(manager, name: str, module) -> Contributions:
    """Register the pack's module under `name`, check its hooks, and call each one."""
    import pluggy

    manager.register(module, name=name)
    try:
        manager.check_pending()  # a hookimpl whose name is not a hook spec: a misspelling
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc}; the hooks are: {', '.join(HOOK_TYPES)}") from None
    found = Contributions()
    targets: dict[str, list[Any]] = {
        "register_tools": found.tools,
        "register_models": found.models,
        "register_pricing": found.prices,
        "register_recommendations": found.recommendations,
    }
    for hook_name, expected in HOOK_TYPES.items():
        for impl in getattr(manager.hook, hook_name).get_hookimpls():
            if impl.plugin_name != name:
                continue
            for item in impl.function() or ():
                if not isinstance(item, expected):
                    raise PluginError(
                        f"{hook_name} yielded {type(item).__name__}, expected fal_mcp.{expected.__name__}"
                    )
                targets[hook_name].append(item)
    return found


# The core's own plugin (like pytest's and conda's built-ins): its module is registered through the
# same hooks as any pack, before the entry points, as the pack "core" (disabled like any pack).
CORE_PACK = "core"


def _add_core(manager, registry: Registry, settings: Settings) -> None:
    """The core's own tools (background jobs, budgets: builtin.py), as the pack 'core'."""
    from importlib.metadata import PackageNotFoundError, version

    from . import builtin

    try:
        core_version = version("fal-mcp-core")
    except PackageNotFoundError:
        core_version = "?"
    pack = Pack(name=CORE_PACK, distribution="fal-mcp-core", version=core_version)
    registry.packs.append(pack)
    if CORE_PACK in settings.plugins_blocked:
        pack.status, pack.error = "disabled", "listed in FAL_MCP_DISABLE_PLUGINS"
        return
    registry.add(pack, _collect(manager, CORE_PACK, builtin))


def _keep_tools(registry: Registry, wanted: frozenset[str]) -> None:
    """Serve only the tools FAL_MCP_TOOLS names (a smaller tools/list: every conversation pays for it).
    ConfigError for a name no loaded pack has: a typo must not silently serve fewer tools."""
    from .config import ConfigError

    unknown = sorted(wanted - set(registry.tools))
    if unknown:
        raise ConfigError(
            f"FAL_MCP_TOOLS names tools no loaded pack has: {', '.join(map(repr, unknown))}. The tools are: "
            + ", ".join(sorted(registry.tools))
        )
    for name in [name for name in registry.tools if name not in wanted]:
        del registry.tools[name]
        pack = registry.tool_packs.pop(name)
        pack.tools.remove(name)


def load_plugins(settings: Settings | None = None, group: str = PROJECT) -> Registry:
    """Load every pack of the entry-point group, isolating broken ones. ConfigError if FAL_MCP_PLUGINS
    names a pack that is not installed."""
    import pluggy

    from . import hookspecs

    settings = settings or Settings.from_env()
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    entries = sorted(map(_Entry.of, entry_points(group=group)), key=lambda e: (e.distribution, e.name))
    _check_names(entries, settings)
    registry = Registry()
    _add_core(manager, registry, settings)
    for entry in entries:
        pack = Pack(name=entry.name, distribution=entry.distribution or "?", version=entry.version)
        registry.packs.append(pack)
        if settings.plugins_allowed is not None and not _wanted(entry, settings.plugins_allowed):
            pack.status, pack.error = "disabled", "not listed in FAL_MCP_PLUGINS"
            continue
        if _wanted(entry, settings.plugins_blocked):
            pack.status, pack.error = "disabled", "listed in FAL_MCP_DISABLE_PLUGINS"
            continue
        try:
            found = _collect(manager, entry.name, entry.point.load())
            registry.add(pack, found)
        except Exception as exc:  # a broken pack must not take the others down
            # shown by `fal-mcp plugins` and logged: a pack's message must not carry the key
            pack.status, pack.error = "failed", scrub(f"{type(exc).__name__}: {exc}", settings.secrets())
            if manager.has_plugin(entry.name):
                manager.unregister(name=entry.name)
            log.error("fal-mcp: pack %r (%s) failed to load: %s", entry.name, pack.label, pack.error)
            if settings.strict_plugins:
                raise PluginError(f"pack {entry.name!r} ({pack.label}) failed to load: {pack.error}") from exc
    if settings.tools_allowed is not None:
        _keep_tools(registry, settings.tools_allowed)
    # A model added to another pack's tool gets its category once every tool is known.
    registry.models = {
        key: model.with_tool_category(registry.tools.get(model.tool))
        for key, model in registry.models.items()
    }
    return registry
