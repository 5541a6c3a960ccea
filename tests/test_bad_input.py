"""Bad input, generated from every registered tool's listed input schema (hypothesis).

For every tool and every rule below, invalid argument sets are generated from the inputSchema the
server lists to MCP clients: wrong types, missing required fields, out-of-range numbers and lengths,
unknown enum values, unknown fields, 1 MB strings, malformed URLs and paths (NUL bytes, other
schemes, traversal, hidden files). Each must come back as an isError result that names the field,
with nothing sent to fal. In-process for breadth; then a sample over a real stdio subprocess and
over streamable HTTP, with a ping after every call; then malformed JSON-RPC on both transports.
"""

from __future__ import annotations

import functools
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fal_mcp.media import media_fields

from .conftest import http_server, server_env, stdio_client, tool_table_for

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]  # ping

RULES = (
    "wrong_type",
    "missing_required",
    "out_of_range",
    "unknown_enum",
    "unknown_field",
    "huge_string",
    "bad_media",
)
EXAMPLES_PER_RULE = 40  # per tool and rule, in process
WIRE_EXAMPLES = 60  # per transport, drawn across all tools and rules


class Huge(str):
    """A string that shows itself short in failure reports."""

    def __repr__(self) -> str:
        return f"<{len(self)} characters: {str.__repr__(self[:12])}...>"


MEGABYTE_STRINGS = (Huge("a" * 1_000_000), Huge("é\x00\u202e\U0001f600\r\n" * 166_667))
# Argument values the schema cannot express (checked by validators) that a valid base needs.
KNOWN_GOOD = {"color_palette": "#ffffff", "background_color": "#000000"}
# A tool whose arguments are valid only in one of two forms.
BASE_OVERRIDES = {"submit_job": {"tool": "generate_image", "arguments": {"prompt": "x"}}}
MEDIA_URL = "https://media.example/in.png"  # a valid remote media value: passed to fal as is, never fetched
MAX_ERROR_TEXT = 3000  # an error never echoes a huge value back


# -- the listed schemas ----------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class ToolSchema:
    name: str
    schema: dict
    model_field: str | None
    media: frozenset[str]  # fields taking a file: URL, data: URI or local path
    accepted_models: frozenset[str]  # what the model field accepts (aliases and endpoint ids)

    def __repr__(self) -> str:
        return f"<{self.name}'s schema>"

    def resolve(self, node: dict) -> dict:
        if "$ref" in node:
            return self.schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        return node


def tool_schemas(registry) -> list[ToolSchema]:
    from fal_mcp.server import input_schema

    found = []
    for name, tool in sorted(registry.tools.items()):
        media = set(media_fields(tool.input_model))
        if name == "upload_file":
            media.add("file_path")
        models = registry.models_for(name) if tool.model_field else []
        found.append(
            ToolSchema(
                name,
                input_schema(tool, registry),
                tool.model_field,
                frozenset(media),
                frozenset([m.alias for m in models] + [m.endpoint_id for m in models]),
            )
        )
    return found


def options(node: dict) -> list[dict]:
    """The alternatives a property allows (anyOf flattened)."""
    return node["anyOf"] if "anyOf" in node else [node]


def types_of(tool: ToolSchema, node: dict) -> set[str]:
    found = set()
    for option in options(node):
        option = tool.resolve(option)
        strings = all(isinstance(value, str) for value in option.get("enum", ()))
        found.add(option.get("type") or ("string" if strings else "integer"))
    return found


def main_option(tool: ToolSchema, node: dict) -> dict:
    return next((tool.resolve(o) for o in options(node) if o.get("type") != "null"), node)


@dataclass(frozen=True)
class Target:
    """One field that can be made invalid: its path in the arguments and its schema."""

    path: tuple
    node: dict
    required: bool

    @property
    def name(self) -> str:
        return ".".join(str(part) for part in self.path)


def targets(tool: ToolSchema) -> list[Target]:
    """Every top-level property, and the properties of nested objects (with their list index)."""
    found = []

    def walk(schema: dict, prefix: tuple) -> None:
        required = set(schema.get("required", ()))
        for key, node in schema.get("properties", {}).items():
            found.append(Target((*prefix, key), node, key in required))
            inner = main_option(tool, node)
            if inner.get("type") == "object" and "properties" in inner:
                walk(inner, (*prefix, key))
            elif inner.get("type") == "array" and "$ref" in inner.get("items", {}):
                walk(tool.resolve(inner["items"]), (*prefix, key, 0))

    walk(tool.schema, ())
    return found


def objects(tool: ToolSchema) -> list[tuple[tuple, dict]]:
    """(path, schema) of the arguments object and of every nested object."""
    found = [((), tool.schema)]
    for target in targets(tool):
        inner = main_option(tool, target.node)
        if inner.get("type") == "object" and "properties" in inner:
            found.append((target.path, inner))
        elif inner.get("type") == "array" and "$ref" in inner.get("items", {}):
            found.append(((*target.path, 0), tool.resolve(inner["items"])))
    return found


# -- valid values, so that exactly one thing is wrong -------------------------------------------


def valid_value(tool: ToolSchema, node: dict, name: str):
    node = main_option(tool, node)
    if name in tool.media:
        return MEDIA_URL
    if name in KNOWN_GOOD:
        return KNOWN_GOOD[name]
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    if kind == "string":
        return "2024-01-01" if node.get("format") == "date" else "a" * max(1, node.get("minLength", 1))
    if kind in ("integer", "number"):
        low = node.get("minimum", node.get("exclusiveMinimum", 0) + 1)
        return low if kind == "number" else math.ceil(low)
    if kind == "array":
        return [valid_value(tool, node.get("items", {}), name) for _ in range(node.get("minItems", 0))]
    if kind == "object":
        return valid_object(tool, node)
    raise AssertionError(f"no valid value for {name}: {node}")


def valid_object(tool: ToolSchema, schema: dict) -> dict:
    properties = schema.get("properties", {})
    return {key: valid_value(tool, properties[key], key) for key in schema.get("required", ())}


def base_arguments(tool: ToolSchema) -> dict:
    return {**valid_object(tool, tool.schema), **BASE_OVERRIDES.get(tool.name, {})}


def with_value(tool: ToolSchema, path: tuple, value=None, *, remove: bool = False) -> dict:
    """The base arguments with `path` set to `value` (or removed), parents made valid on the way."""
    arguments = base_arguments(tool)
    holder, schema = arguments, tool.schema
    for depth, part in enumerate(path[:-1]):
        node = schema["properties"][part] if isinstance(part, str) else None
        nxt = path[depth + 1]
        if isinstance(holder, dict) and part not in holder:
            inner = main_option(tool, node)
            holder[part] = (
                [valid_object(tool, tool.resolve(inner["items"]))]
                if inner.get("type") == "array"
                else valid_object(tool, inner)
            )
        if isinstance(nxt, int):
            schema = tool.resolve(main_option(tool, node)["items"])
            holder = holder[part]
        elif isinstance(part, int):
            holder = holder[part]
        else:
            schema = main_option(tool, node)
            holder = holder[part]
    if remove:
        holder.pop(path[-1], None)
    else:
        holder[path[-1]] = value
    return arguments


# -- the rules: each a strategy of (field named in the error, arguments) --------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def wrong_values(tool: ToolSchema, target: Target):
    """Values of a JSON type the field does not take. Not the conversions pydantic makes on purpose
    (numeric strings and booleans for numbers, whole floats for integers, numbers for dates)."""
    allowed = types_of(tool, target.node)
    numeric = bool(allowed & {"integer", "number"})
    is_date = main_option(tool, target.node).get("format") == "date"
    choices = []
    if "string" not in allowed:
        choices.append(st.text(max_size=20).filter(lambda s: not (numeric and _is_number(s))))
    if not numeric and not is_date:
        choices += [st.integers(), st.floats(allow_nan=False, allow_infinity=False)]
    if "integer" in allowed and "number" not in allowed:
        choices.append(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)))
    if "boolean" not in allowed and not numeric:
        choices.append(st.booleans())
    if "array" not in allowed:
        choices.append(st.lists(json_values, max_size=3))
    if "object" not in allowed:
        choices.append(st.dictionaries(st.text(max_size=5), json_values, max_size=3))
    if "null" not in allowed and target.required:
        choices.append(st.none())
    return st.one_of(choices)


def out_of_range_values(tool: ToolSchema, target: Target, wire: bool):
    node = main_option(tool, target.node)
    kind, choices = node.get("type"), []
    if kind in ("integer", "number"):
        numbers = (
            st.integers
            if kind == "integer"
            else (
                lambda min_value=None, max_value=None: st.floats(
                    min_value=min_value, max_value=max_value, allow_nan=False, allow_infinity=not wire
                )
            )
        )
        if "minimum" in node:
            low = node["minimum"]
            choices.append(
                numbers(max_value=low - 1)
                if kind == "integer"
                else numbers(max_value=low).filter(lambda x: x < low)
            )
        if "exclusiveMinimum" in node:
            choices.append(numbers(max_value=node["exclusiveMinimum"]))
        if "maximum" in node:
            high = node["maximum"]
            choices.append(
                numbers(min_value=high + 1)
                if kind == "integer"
                else numbers(min_value=high).filter(lambda x: x > high)
            )
        if kind == "number" and not wire and choices:
            choices.append(st.just(math.nan))
    if kind == "string":
        if node.get("minLength", 0) > 0:
            choices.append(st.text(max_size=node["minLength"] - 1))
        if node.get("maxLength", math.inf) < 1_000_000:
            longer = node["maxLength"] + 1
            choices.append(
                st.builds(
                    lambda c, extra: Huge(c * (longer + extra)),
                    st.characters(exclude_categories=["Cs"]),
                    st.integers(0, 50),
                )
            )
        if node.get("pattern") == r"\S":
            choices.append(st.text(alphabet=" \t\r\n\x0b\x0c\u00a0\u2003", min_size=1, max_size=10))
    if kind == "array":
        item = valid_value(tool, node.get("items", {}), target.path[-1])
        if node.get("minItems", 0) > 0:
            choices.append(st.just([]))
        if "maxItems" in node:
            choices.append(st.integers(node["maxItems"] + 1, node["maxItems"] + 5).map(lambda n: [item] * n))
    return st.one_of(choices) if choices else None


def unknown_enum_values(tool: ToolSchema, target: Target):
    """Values outside an enum (the model field's choices included), and malformed dates."""
    node = main_option(tool, target.node)
    if target.path == (tool.model_field,):
        return st.text(min_size=1, max_size=30).filter(lambda s: s not in tool.accepted_models)
    if "enum" in node:
        if all(isinstance(v, int) for v in node["enum"]):
            return st.integers().filter(lambda v: v not in node["enum"])
        return st.text(max_size=30).filter(lambda s: s not in node["enum"])
    if node.get("format") == "date":
        return st.text(min_size=1, max_size=30).filter(lambda s: not _is_number(s) and not _is_date(s))
    return None


def _is_date(text: str) -> bool:
    from datetime import date

    try:
        date.fromisoformat(text.strip())
    except ValueError:
        return False
    return True


def bad_media_values():
    """Values no file field may accept: NUL bytes, malformed URLs, other schemes, traversal and hidden
    paths, paths that are not files, malformed data: URIs."""
    text = st.text(max_size=12)
    path_text = st.text(min_size=1, max_size=30).filter(
        lambda s: "\x00" not in s and "://" not in s and not s.startswith(("data:", "http:", "https:"))
    )
    scheme = st.sampled_from(["http://", "https://"])
    malformed_urls = st.one_of(
        st.builds(lambda s, rest: s + rest, scheme, st.sampled_from(["", "/x.png", "?a=1", ":80/x", "@/x"])),
        st.builds(
            lambda s, c: f"{s}exa{c}mple.com/x.png",
            scheme,
            st.characters(categories=["Cc", "Zs"]) | st.sampled_from(["\n", "\t", " "]),
        ),
        st.builds(
            lambda s, port: f"{s}example.com:{port}/x.png",
            scheme,
            st.integers(65536, 10**12).map(str) | st.sampled_from(["abc", "-1", "8o"]),
        ),
        st.builds(lambda s, h: f"{s}[{h}/x.png", scheme, st.sampled_from(["::1", "fe80::1", "", "x"])),
        st.builds(lambda s, c: f"{s}exa{c}mple.com/", scheme, st.sampled_from(list("<>{}|\\^`\"'"))),
        st.builds(lambda s: Huge(s + "example.com/" + "a" * 9000), scheme),
    )
    other_schemes = st.builds(
        lambda s, rest: f"{s}:{rest}",
        st.sampled_from(
            ["file", "ftp", "gopher", "dict", "ldap", "jar", "sftp", "tftp", "javascript", "vbscript"]
        ),
        st.sampled_from(
            ["//etc/passwd", "///etc/passwd", "//example.com/x.png", "alert(1)", "//127.0.0.1/x"]
        ),
    )
    traversal = st.sampled_from(
        ["../" * n + "etc/passwd" for n in range(1, 9)]
        + [
            "/etc/passwd",
            "/proc/self/environ",
            "../../../../proc/self/environ",
            "~/.ssh/id_rsa",
            "~root/.bashrc",
            ".env",
            ".git/config",
            "a/../.env",
            "x/.ssh/id_rsa",
            "..\\..\\windows\\win.ini",
            "/",
            ".",
            "..",
            "%2e%2e/%2e%2e/etc/passwd",
            "\u2024\u2024/\u2024\u2024/etc/passwd",
            "/dev/zero",
            "/dev/stdin",
        ]
    )
    bad_data = st.one_of(
        st.builds(lambda s: "data:" + s, text.filter(lambda s: "," not in s)),
        st.builds(
            lambda s: "data:image/png;base64," + s,
            st.text(alphabet="@!#$%^&*()[]{}<>~`\x00 ", min_size=1, max_size=20),
        ),
    )
    return st.one_of(
        st.builds(lambda a, b: a + "\x00" + b, text, text),
        malformed_urls,
        other_schemes,
        traversal,
        path_text,
        bad_data,
    )


def rule_strategy(tool: ToolSchema, rule: str, wire: bool = False):
    """(field the error must name, arguments) for `tool` under `rule`; None when it does not apply."""
    fields = targets(tool)

    def at(candidates, values):
        candidates = [(t, v) for t in candidates if (v := values(t)) is not None]
        if not candidates:
            return None
        return st.sampled_from(candidates).flatmap(
            lambda pair: pair[1].map(lambda value, t=pair[0]: (t.name, with_value(tool, t.path, value)))
        )

    if rule == "wrong_type":
        return at(fields, lambda t: wrong_values(tool, t))
    if rule == "missing_required":
        required = [t for t in fields if t.required and t.path[0] not in BASE_OVERRIDES.get(tool.name, {})]
        if not required:
            return None
        return st.sampled_from(required).map(lambda t: (t.name, with_value(tool, t.path, remove=True)))
    if rule == "out_of_range":
        return at(fields, lambda t: out_of_range_values(tool, t, wire))
    if rule == "unknown_enum":
        return at(fields, lambda t: unknown_enum_values(tool, t))
    if rule == "unknown_field":

        def unknown(path_and_schema):
            path, schema = path_and_schema
            # not a secret the server scrubs from messages ("***"): hypothesis also draws the string
            # constants of the code it runs, the sandbox's key among them
            names = st.text(min_size=1, max_size=20).filter(
                lambda s: s not in schema.get("properties", {}) and "sandbox-key" not in s
            )
            return st.tuples(names, json_values).map(
                lambda kv: (".".join(str(p) for p in (*path, kv[0])), with_value(tool, (*path, kv[0]), kv[1]))
            )

        return st.sampled_from(objects(tool)).flatmap(unknown)
    if rule == "huge_string":
        strings = [t for t in fields if "string" in types_of(tool, t.node) or t.path[-1] in tool.media]
        return at(strings, lambda t: st.sampled_from(MEGABYTE_STRINGS))
    if rule == "bad_media":
        return at([t for t in fields if t.path[-1] in tool.media], lambda t: bad_media_values())
    raise AssertionError(rule)


# -- what every refusal must look like --------------------------------------------------------


def assert_refused(result, field: str, arguments: dict) -> None:
    shown = repr(arguments)[:300]
    assert result.is_error, f"accepted {shown}"
    text = result.content[0].text
    assert re.search(rf"(?<![\w.]){re.escape(field)}(?=[:.\[ ])", text), f"{field!r} not named in {text!r}"
    assert "Internal error" not in text and "Traceback" not in text, text
    assert len(text) < MAX_ERROR_TEXT, f"{len(text)} characters of error for {shown}"


@functools.cache
def schemas() -> dict[str, ToolSchema]:
    """Every installed tool's listed schema, by tool name."""
    from fal_mcp.config import Settings
    from fal_mcp.plugins import load_plugins

    return {tool.name: tool for tool in tool_schemas(load_plugins(Settings.from_env({})))}


def pytest_generate_tests(metafunc):
    if "tool_rule" in metafunc.fixturenames:
        pairs = [
            (tool.name, rule)
            for tool in schemas().values()
            for rule in RULES
            if rule_strategy(tool, rule) is not None
        ]
        metafunc.parametrize("tool_rule", pairs, ids=[f"{tool}-{rule}" for tool, rule in pairs])


# Hypothesis draws inside the test body, which must then be synchronous: each call runs on the event
# loop of a blocking portal (conftest), which also serves the sandbox and the clients.


@pytest.fixture
def table(portal, portal_sandbox, registry, tmp_path):
    """Every tool in process; local paths may only come from an empty directory."""
    portal_sandbox.state.reset()
    with portal.wrap_async_context_manager(
        tool_table_for(portal_sandbox, registry, FAL_MCP_ALLOWED_DIRS=str(tmp_path))
    ) as table:
        yield table


# derandomize: the same cases every run, so a failure is no flake and shows again
HYPOTHESIS = dict(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


# -- in process: every tool, every rule ------------------------------------------------------------


def test_every_tool_has_a_valid_base_so_each_case_breaks_one_thing(registry):
    for name, tool in schemas().items():
        registry.tools[name].input_model.model_validate(base_arguments(tool))  # raises if the bases are wrong
    assert len(schemas()) == len(registry.tools) >= 20


@settings(max_examples=EXAMPLES_PER_RULE, **HYPOTHESIS)
@given(data=st.data())
def test_invalid_arguments_are_refused_naming_the_field(portal, table, portal_sandbox, tool_rule, data):
    name, rule = tool_rule
    field, arguments = data.draw(rule_strategy(schemas()[name], rule), label="case")
    result = portal.call(table.call, name, arguments)
    assert_refused(result, field, arguments)
    assert portal_sandbox.state.requests == [], "a request reached fal"


async def test_the_server_still_works_after_bad_input(tool_table):
    for arguments in ({"prompt": 5}, {"prompt": "x" * 1_000_000}, {"prompt": "x", "\x00": 1}):
        assert (await tool_table.call("generate_image", arguments)).is_error
    result = await tool_table.call("generate_image", {"prompt": "still fine"})
    assert not result.is_error, result.content[0].text


async def test_free_text_takes_any_unicode_and_control_characters(tool_table, sandbox):
    # Not invalid: a prompt may hold any character; it reaches fal intact.
    prompt = "日本語 ✨ \u202e\u200b\x07\x1b[31m\t\r\n \U0001f600 Ω≈ç√"
    result = await tool_table.call("generate_image", {"prompt": prompt, "image_size": "square"})
    assert not result.is_error, result.content[0].text
    assert sandbox.state.submissions[-1]["input"]["prompt"] == prompt


# -- over the wire: the same cases through a real server, with a ping after each ------------------------


def wire_cases():
    pairs = [
        (tool, rule)
        for tool in schemas().values()
        for rule in RULES
        if rule_strategy(tool, rule, wire=True) is not None
    ]
    return st.sampled_from(pairs).flatmap(
        lambda pair: rule_strategy(pair[0], pair[1], wire=True).map(
            lambda case, name=pair[0].name: (name, *case)
        )
    )


@pytest.fixture(params=["stdio", "http"])
def wire_client(request, portal, thread_sandbox, tmp_path):
    """An MCP client of a real server subprocess, pointed at the thread sandbox."""
    from .test_http import mcp_http_client

    thread_sandbox.state.reset()
    env = server_env({**thread_sandbox.env(), "FAL_MCP_ALLOWED_DIRS": str(tmp_path)})
    if request.param == "stdio":
        with portal.wrap_async_context_manager(stdio_client(["serve"], env)) as client:
            yield client
        return
    with http_server(["--transport", "http"], env) as (_, base):
        with portal.wrap_async_context_manager(mcp_http_client(base + "/mcp")) as client:
            yield client


@settings(max_examples=WIRE_EXAMPLES, **HYPOTHESIS)
@given(data=st.data())
def test_invalid_arguments_over_the_wire(portal, wire_client, thread_sandbox, data):
    name, field, arguments = data.draw(wire_cases(), label="case")
    assert_refused(portal.call(wire_client.call_tool, name, arguments), field, arguments)
    portal.call(wire_client.send_ping)
    assert thread_sandbox.state.requests == [], "a request reached fal"


# -- malformed JSON-RPC ----------------------------------------------------------------------------

PARSE_ERRORS = [
    b"not json",
    b"{",
    b"\xff\xfe\x00garbage",
    b'{"jsonrpc": "2.0", "id": 1, "method": "ping"',
    b"\x00\x00\x00",
    b"[1, 2",
]
# Valid JSON that is no JSON-RPC message, each with the id the error answer carries: the request's own when
# it has a usable one (so its sender is not left waiting), else null.
INVALID_REQUESTS = [
    (b"[]", None),
    (b"null", None),
    (b"123", None),
    (b'"text"', None),
    (b"true", None),
    (b'{"jsonrpc":"2.0"}', None),
    (b'{"id": 3}', None),
    (b'{"jsonrpc":"2.0","id":1,"method":5}', 1),
    (b'{"jsonrpc":"1.0","id":"two","method":"ping"}', "two"),
    (b'{"jsonrpc":"2.0","id":4,"method":"tools/call","params":"x"}', 4),
    (b'{"jsonrpc":"2.0","id":5,"method":"tools/list","params":[1,2]}', 5),
    (b'[{"jsonrpc":"2.0","id":6,"method":"ping"}]', None),
]
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "garbage", "version": "0"},
    },
}


class LineClient:
    """A bare JSON-RPC client on a server's stdin/stdout: one line out, one line back."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    def send(self, line: bytes) -> None:
        self.process.stdin.write(line + b"\n")
        self.process.stdin.flush()

    def answer(self) -> dict:
        line = self.process.stdout.readline()
        assert line, "the server closed stdout"
        return json.loads(line)


def test_malformed_json_rpc_over_stdio_gets_protocol_errors_and_the_server_survives():
    process = subprocess.Popen(
        [sys.executable, "-m", "fal_mcp.cli", "serve", "--sandbox"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=server_env(),
    )
    client = LineClient(process)
    try:
        client.send(json.dumps(INITIALIZE).encode())
        assert client.answer()["id"] == 0
        client.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        for line in PARSE_ERRORS:
            client.send(line)
            answer = client.answer()
            assert answer["id"] is None and answer["error"]["code"] == -32700, (line, answer)
        for line, request_id in INVALID_REQUESTS:
            client.send(line)
            answer = client.answer()
            assert answer["id"] == request_id and answer["error"]["code"] == -32600, (line, answer)
        client.send(b'{"jsonrpc":"2.0","id":7,"method":"no/such/method"}')
        assert client.answer()["error"]["code"] == -32601
        client.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 8,
                    "method": "tools/call",
                    "params": {"name": "generate_image", "arguments": {"prompt": "x" * 5_000_000}},
                }
            ).encode()
        )  # a 5 MB line
        answer = client.answer()
        assert answer["id"] == 8 and answer["result"]["isError"]
        client.send(b'{"jsonrpc":"2.0","id":9,"method":"ping"}')
        assert client.answer() == {"jsonrpc": "2.0", "id": 9, "result": {}}
    finally:
        process.stdin.close()
        process.wait(timeout=10)
    assert process.returncode == 0


def test_malformed_json_rpc_over_http_gets_protocol_errors_and_the_server_survives():
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    env = server_env({"FAL_MCP_MAX_BODY_MB": "1"})
    with http_server(["--sandbox", "--transport", "http"], env) as (_, base):
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            session = http.post("/mcp", json=INITIALIZE)
            headers = {
                "Mcp-Session-Id": session.headers["mcp-session-id"],
                "Mcp-Protocol-Version": "2025-11-25",
            }
            http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
            for stateful in (headers, {}):
                for body in PARSE_ERRORS:
                    answer = http.post("/mcp", content=body, headers=stateful)
                    assert answer.status_code == 400 and answer.json()["error"]["code"] == -32700, body
                    assert answer.json()["id"] is None
                for body, _ in INVALID_REQUESTS:
                    answer = http.post("/mcp", content=body, headers=stateful)
                    # the SDK answers an invalid request object with -32602 (invalid params), not -32600
                    assert answer.status_code == 400, body
                    assert answer.json()["error"]["code"] in (-32600, -32602), body
            assert http.post("/mcp", content=b"x" * 2_000_000).status_code == 413
            chunks = (b"x" * 65536 for _ in range(40))  # no Content-Length: counted as it arrives
            assert http.post("/mcp", content=chunks).status_code == 413
            assert http.post("/mcp", content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 400
            assert (
                http.post(
                    "/mcp",
                    json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                    headers={**headers, "Accept": "text/html"},
                ).status_code
                == 406
            )
            pong = http.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers=headers)
            assert pong.status_code == 200 and '"id":2,"result":{}' in pong.text
            assert http.get("/health").json()["status"] == "ok"
