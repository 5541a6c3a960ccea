"""Every hook spec is documented in docs/plugins.md (a heading of its own, naming each field of its
dataclass) and exercised by a test: a new hook cannot ship without both."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from fal_mcp import hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "plugins.md"
TESTS = Path(__file__).resolve().parent
# pluggy marks each spec function with "<project>_spec".
HOOKS = sorted(name for name, value in vars(hookspecs).items() if hasattr(value, f"{hookspecs.PROJECT}_spec"))


def section(text: str, hook: str) -> str | None:
    """The docs under the heading naming `hook`, up to the next heading of the same or a higher level."""
    lines, in_code, fenced = text.splitlines(), [], False
    for line in lines:  # a "# comment" in a code block is not a heading
        fenced ^= line.startswith("```")
        in_code.append(fenced)
    headings = [
        (i, len(m.group(1)))
        for i, line in enumerate(lines)
        if not in_code[i] and (m := re.match(r"^(#+)\s", line))
    ]
    for index, level in headings:
        if re.search(rf"\b{hook}\b", lines[index]):
            end = next((i for i, lvl in headings if i > index and lvl <= level), len(lines))
            return "\n".join(lines[index:end])
    return None


def exercised_in(hook: str) -> list[Path]:
    """Test modules naming the hook, and test packs implementing it (built copies under build/ aside)."""
    implemented = re.compile(rf"@hookimpl\s*\n\s*def {hook}\(")
    found = []
    for path in TESTS.rglob("*.py"):
        if path == Path(__file__).resolve() or "build" in path.relative_to(TESTS).parts:
            continue
        text = path.read_text()
        if implemented.search(text) or (path.name.startswith("test_") and re.search(rf"{hook}(?!\w)", text)):
            found.append(path)
    return found


def test_the_hooks_are_found():
    assert HOOKS == sorted(hookspecs.HOOK_TYPES)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    text = section(DOCS.read_text(), hook)
    assert text is not None, f"docs/plugins.md has no heading naming {hook}"
    kind = hookspecs.HOOK_TYPES[hook]
    assert f"`{kind.__name__}`" in text, f"the {hook} section does not name {kind.__name__}"
    missing = [f.name for f in fields(kind) if f"`{f.name}`" not in text]
    assert not missing, f"the {hook} section does not describe {kind.__name__}'s fields {missing}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    assert exercised_in(hook), f"no test or test pack under tests/ exercises {hook}"


def test_every_hook_is_called_and_its_results_reach_the_registry(monkeypatch):
    """Not just named: loading the installed packs calls each hook, and what it yields is registered."""
    import pluggy

    from fal_mcp.config import Settings
    from fal_mcp.plugins import load_plugins

    called: list[str] = []
    original = pluggy.HookCaller.get_hookimpls

    def recording(self):  # the loader calls each pack's implementations itself, to know whose they are
        implementations = original(self)
        if implementations:
            called.append(self.name)
        return implementations

    monkeypatch.setattr(pluggy.HookCaller, "get_hookimpls", recording)
    registry = load_plugins(Settings.from_env({}))
    assert set(HOOKS) <= set(called), f"never called: {set(HOOKS) - set(called)}"
    registered = {
        "register_tools": registry.tools,
        "register_models": registry.models,
        "register_pricing": registry.prices,
        "register_recommendations": registry.recommendations,
    }
    assert set(registered) == set(HOOKS) and all(registered.values()), "a hook's results were not registered"


def test_hook_spec_examples_run():
    """Each hook spec's docstring carries a short example; it must run as written."""
    import doctest

    results = doctest.testmod(hookspecs)
    assert results.attempted >= len(HOOKS) and results.failed == 0
