"""`fal-mcp`: serve, list packs and tools, run the offline sandbox (a distribution of its own)."""

from __future__ import annotations

import argparse
import errno
import gc
import json
import logging
import os
import sys
from dataclasses import replace

from .config import ConfigError, Settings
from .errors import scrub_logs

log = logging.getLogger("fal_mcp")
TRANSPORTS = ("stdio", "http", "sse", "dual")
GC_THRESHOLDS = (50_000, 50, 100)  # Python's defaults are (700, 10, 10)


def _setup_logging() -> None:
    # stdout carries the protocol: logs go to stderr only.
    level = os.environ.get("FAL_MCP_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _registry(settings: Settings):
    from .plugins import load_plugins

    return load_plugins(settings)


# The sandbox is the distribution fal-mcp-sandbox, not part of the core: a server installed for
# production carries no fake of fal.
SANDBOX_MISSING = (
    "fal-mcp: the offline fal sandbox is not installed. Add it with\n"
    "    pip install fal-mcp-sandbox\n"
    "(the all-in-one `pip install fal-mcp` includes it), or set FAL_KEY and serve without --sandbox."
)


def _sandbox_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("fal_mcp_sandbox") is not None


class ListenError(Exception):
    """The HTTP transport cannot listen where it was asked to (a port in use, say)."""


def _listen_error(host: str, port: int, exc: OSError) -> ListenError:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        advice = (
            f"port {port} is already in use (another server listens there); "
            "choose another with --port N, or --port 0 for any free one"
        )
    elif exc.errno == errno.EACCES:
        advice = "permission denied (ports below 1024 need privileges); choose another with --port N"
    else:
        advice = f"{exc.strerror or exc}; check --host (FAL_MCP_HOST)"
    return ListenError(f"cannot listen on {where}: {advice}")


def _check_listen(host: str, port: int) -> None:
    """Bind the address once, as serve_http will, and let it go: a taken port is reported before
    anything starts (serve_http binds it again; a race there is reported the same way)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise _listen_error(host, port, exc) from None


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or `exc` itself."""
    inner = getattr(exc, "exceptions", None)
    if not isinstance(inner, tuple) or not all(isinstance(item, BaseException) for item in inner):
        return [exc]
    return [leaf for item in inner for leaf in _leaves(item)]


def _commands() -> tuple[str, str]:
    """This program as typed in this terminal, and as an absolute path for a client's configuration."""
    import shutil

    typed = sys.argv[0] if sys.argv and os.path.basename(sys.argv[0]).startswith("fal-mcp") else ""
    if not typed:  # python -m fal_mcp.cli: this environment's script
        script = os.path.join(os.path.dirname(sys.executable), "fal-mcp")
        typed = script if os.path.exists(script) else "fal-mcp"
    on_path = shutil.which("fal-mcp")
    absolute = os.path.abspath(typed) if os.sep in typed else (on_path or typed)
    if on_path and os.path.abspath(on_path) == absolute:
        typed = "fal-mcp"
    return typed, absolute


def client_hint(sandbox: bool, transport: str) -> str:
    """What a person who started `fal-mcp serve` in a terminal reads: how to connect a client."""
    typed, absolute = _commands()
    serve_args = ["serve", "--sandbox"] if sandbox else ["serve"]
    entry: dict = {"command": absolute, "args": serve_args}
    if not sandbox:
        entry["env"] = {"FAL_KEY": "your-fal-key"}
    snippet = json.dumps({"mcpServers": {"fal": entry}})
    sandbox_flag = " --sandbox" if sandbox else ""
    lines = [
        "fal-mcp: ready. An MCP server speaks the protocol on stdin/stdout with the client that starts it: "
        "there is nothing to type here (Ctrl-C stops it). To connect a client:",
        "  Claude Desktop: add this to claude_desktop_config.json, then restart Claude Desktop:",
        f"    {snippet}",
    ]
    if transport == "stdio":
        lines.append(
            f"  A client that connects to a URL: {typed} serve{sandbox_flag} --transport http (it prints its URL)"
        )
    lines.append(
        "  --sandbox is the offline fal stand-in: placeholder media, no key needed; "
        "to use fal itself, set FAL_KEY and leave it out."
        if sandbox
        else f"  No fal key yet? {typed} serve --sandbox uses the offline fal stand-in (placeholder media)."
    )
    return "\n".join(lines)


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (OSError, ValueError):  # closed
        return False


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import anyio

    if args.sandbox and not _sandbox_installed():
        print(SANDBOX_MISSING, file=sys.stderr)
        return 2
    transport = args.transport or os.environ.get("FAL_MCP_TRANSPORT", "").strip() or "stdio"
    if transport not in TRANSPORTS:
        raise ConfigError(f"FAL_MCP_TRANSPORT={transport!r} must be one of {', '.join(TRANSPORTS)}")
    from .fal_keys import check_mode

    check_mode(settings, transport)  # whose fal key: refused before anything starts if it cannot work
    http_settings = None
    if transport != "stdio":
        from .http import HttpSettings

        http_settings = HttpSettings.from_env(
            os.environ, host=args.host, port=args.port, stateless=True if args.stateless else None
        )
        http_settings.check_exposure()  # before anything starts
        from .supervisor import default_workers, in_memory

        workers = args.workers if args.workers is not None else default_workers(http_settings.stateless)
        explicit = args.workers is not None or bool(os.environ.get("FAL_MCP_WORKERS", "").strip())
        if workers > 1 and not explicit and in_memory(settings.store_url):
            workers = 1  # by default only: workers could not share a job store in one process's memory
        if workers < 1:
            raise ConfigError(f"--workers {workers}: at least 1")
        if workers > 1 and transport != "http":
            if args.workers is not None or os.environ.get("FAL_MCP_WORKERS", "").strip():
                raise ConfigError(
                    f"--workers {workers} needs --transport http: the {transport} transport keeps each "
                    "client's stream in one process"
                )
            workers = 1
        if workers > 1:  # a supervisor of worker processes sharing one socket (supervisor.py)
            from .supervisor import supervise

            if not http_settings.stateless:
                print(
                    f"fal-mcp: {workers} worker processes: streamable HTTP runs stateless (a session lives in "
                    "one process, a client's next request may reach another); --workers 1 keeps sessions",
                    file=sys.stderr,
                )
            return supervise(
                count=workers,
                host=http_settings.host,
                port=http_settings.port,
                sandbox=args.sandbox,
                store_url=settings.store_url,
                serve_args=[],
                listen_error=lambda exc: _listen_error(http_settings.host, http_settings.port, exc),
            )
        if not os.environ.get("FAL_MCP_LISTEN_FD", "").strip():  # a worker's socket is its supervisor's
            _check_listen(http_settings.host, http_settings.port)
    # Start-up allocates what lives as long as the server (modules, classes, the tool table), and
    # next to no garbage: the collector stays off until serving begins, where main() freezes it all.
    # Its passes over the SDK's and the packs' imports took ~40 ms of a ~0.8 s start.
    collecting = gc.isenabled()
    gc.disable()
    from . import memory

    memory.pin_mmap_threshold()
    try:
        registry = _registry(settings)
    except BaseException:
        if collecting:
            gc.enable()
        raise
    active = [pack.name for pack in registry.packs if pack.status == "active"]
    log.info("serving %d tools from packs: %s", len(registry.tools), ", ".join(active) or "none")

    async def main() -> None:
        from .gateway import FalGateway
        from .server import ToolTable, import_sdk, serve_stdio

        run_settings, sandbox = settings, None
        if args.sandbox:
            from fal_mcp_sandbox import Sandbox

            sandbox = Sandbox()
            await sandbox.start()
            run_settings = sandbox_settings(settings, sandbox.env())
            print(
                f"fal-mcp: using the offline fal sandbox at {sandbox.base_url} (placeholder media, no key "
                "needed)",
                file=sys.stderr,
            )
        relay = None
        try:
            # One gateway and one tool table, whatever the transports.
            async with (
                FalGateway(run_settings) as gateway,
                ToolTable(registry, run_settings, gateway) as table,
            ):
                table.runner.start_resuming()  # jobs a previous run left: followed to their end
                import_sdk()  # the SDK's server modules, loaded for good like the rest
                # What is loaded now lives as long as the server: keep it out of the garbage
                # collector's passes, and make those rarer: a full pass over a busy server's
                # objects stalled the event loop for ~100 ms (benchmarks/concurrency.py).
                if collecting:
                    gc.enable()
                gc.freeze()
                gc.set_threshold(*GC_THRESHOLDS)
                # A person, not a client, started it on a terminal: told how to connect one.
                terminal = transport in ("stdio", "dual") and _stdin_is_terminal()
                if transport == "stdio" and not terminal:
                    await serve_stdio(table)  # a client's signals: Python's defaults
                    return
                async with anyio.create_task_group() as group:
                    if terminal:
                        relay = _TerminalRelay()
                    await group.start(_stop_on_signal, group.cancel_scope, relay)
                    if terminal:  # stdout carries the protocol: stderr
                        print(client_hint(args.sandbox, transport), file=sys.stderr)
                    if transport == "stdio":
                        await serve_stdio(table)
                    else:
                        if http_settings is None:  # read above for every transport but stdio
                            raise RuntimeError(f"no HTTP settings for the {transport} transport")
                        from .http import serve_http

                        if transport == "dual":
                            group.start_soon(serve_http, table, http_settings, ("http",))
                            await serve_stdio(table)  # the stdio client leaving ends the server
                        else:
                            await serve_http(table, http_settings, (transport,))
                    group.cancel_scope.cancel()
        finally:
            if relay is not None:
                relay.restore()
            if sandbox is not None:
                await sandbox.stop()

    try:
        anyio.run(main, backend="asyncio", backend_options=_loop_options(transport))
    except BaseException as exc:
        taken = [
            leaf for leaf in _leaves(exc) if isinstance(leaf, OSError) and leaf.errno == errno.EADDRINUSE
        ]
        if http_settings is not None and taken:  # taken between _check_listen and serve_http's bind
            raise _listen_error(http_settings.host, http_settings.port, taken[0]) from None
        raise
    finally:
        if collecting:  # as it was, also when the start failed before serving began
            gc.enable()
    return 0


def _loop_options(transport: str) -> dict:
    """uvloop for the network transports when it is installed (a core dependency: its event loop's
    scheduling and socket handling cost a fraction of asyncio's pure-Python ones); FAL_MCP_UVLOOP=0
    keeps asyncio's own loop. stdio keeps asyncio's (its reads run in a thread anyway)."""
    if transport == "stdio" or os.environ.get("FAL_MCP_UVLOOP", "").strip().lower() in ("0", "false", "no"):
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


async def _stop_on_signal(scope, relay: _TerminalRelay | None = None, *, task_status=None) -> None:
    """SIGTERM or SIGINT (Ctrl-C) cancels `scope`: the server stops cleanly. Started with
    `group.start`, it reports once it receives them."""
    import signal

    import anyio

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        if task_status is not None:
            task_status.started()
        async for _ in signals:
            if relay is not None:
                relay.close()  # the stdio transport's read ends: it can finish its cancellation
            scope.cancel()
            return


class _TerminalRelay:
    """Standard input, when it is a terminal, read by a daemon thread and handed on through a pipe put
    in its place (fd 0). The MCP stdio transport reads fd 0 in a worker thread that nothing interrupts:
    blocked on a terminal, it held the server after Ctrl-C until a line was typed. Closing the pipe
    (Ctrl-C, or Ctrl-D on the terminal) is a client leaving: the server stops cleanly."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._terminal = os.dup(0)
        read_end, write_end = os.pipe()
        self._write_end: int | None = write_end
        os.dup2(read_end, 0)
        os.close(read_end)
        threading.Thread(target=self._pump, name="fal-mcp terminal input", daemon=True).start()

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self._terminal, 65536)
            except OSError:
                data = b""
            if not data:
                break
            with self._lock:
                if self._write_end is None:
                    return
                try:
                    while data:
                        data = data[os.write(self._write_end, data) :]
                except OSError:
                    break
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._write_end is not None:
                os.close(self._write_end)
                self._write_end = None

    def restore(self) -> None:
        """fd 0 is the terminal again (the pump thread, blocked on it, ends with the process)."""
        self.close()
        try:
            os.dup2(self._terminal, 0)
        except OSError:
            pass


def sandbox_settings(settings: Settings, sandbox_env: dict[str, str]) -> Settings:
    """`settings` pointed at a sandbox: its URLs and its key, never the user's real key; its jobs are kept
    in memory unless FAL_MCP_STORE says otherwise (they die with the in-process sandbox anyway)."""
    urls = {kind: sandbox_env[f"FAL_MCP_{kind.upper()}_URL"] for kind in settings.urls}
    return replace(
        settings,
        urls=urls,
        fal_key=sandbox_env["FAL_KEY"],
        store_url=settings.store_url or "sqlite:///:memory:",
    )


def cmd_plugins(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    rows = [pack.as_dict() for pack in registry.packs]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("No packs installed. Install one, e.g. `pip install fal-mcp-image`.")

    def count(number: int, noun: str) -> str:
        return f"{number} {noun}{'' if number == 1 else 's'}"

    table = [
        [
            row["name"],
            row["distribution"],
            str(row["version"]),
            row["status"],
            count(row["tools"], "tool"),
            count(row["models"], "model"),
        ]
        for row in rows
    ]
    widths = [max(len(cells[column]) for cells in table) for column in range(5)] if table else []
    for row, cells in zip(rows, table, strict=True):
        line = (
            "  ".join(cell.ljust(width) for cell, width in zip(cells[:5], widths, strict=True))
            + "  "
            + cells[5]
        )
        print(line + (f"  ({row['error']})" if row["error"] else ""))
    return 0


def cmd_tools(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    rows = [
        {
            "name": name,
            "title": tool.title,
            "pack": registry.tool_packs[name].name,
            "distribution": registry.tool_packs[name].distribution,
            "models": [m.alias for m in registry.models_for(name)],
        }
        for name, tool in sorted(registry.tools.items())
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        models = f"  models: {', '.join(row['models'])}" if row["models"] else ""
        print(f"{row['name']:<28} {row['distribution']:<18} {row['title']}{models}")
    return 0


def cmd_models_check(args: argparse.Namespace, settings: Settings) -> int:
    """Each registered model's vendored input schema against fal's live OpenAPI document: fields added,
    removed or changed, and endpoints that no longer exist. Exit 1 if anything drifted."""
    import anyio

    registry = _registry(settings)

    async def check_all() -> list[dict]:
        from .endpoint_schemas import compare_inputs, openapi_schemas
        from .errors import ToolError
        from .gateway import FalGateway

        rows = []
        # the operator's command: the server's own key, whatever FAL_MCP_KEY_MODE says for users
        async with FalGateway(replace(settings, key_mode="server")) as gateway:
            for model in registry.models.values():
                row = {"tool": model.tool, "alias": model.alias, "endpoint": model.endpoint_id, "changes": []}
                rows.append(row)
                vendored = model.input_schema()
                if vendored is None:
                    row["status"] = "no vendored schema"
                    continue
                try:
                    page = await gateway.platform(
                        "GET",
                        "/models",
                        params=[("endpoint_id", model.endpoint_id), ("expand", "openapi-3.0")],
                        ttl=300,
                    )
                except ToolError as exc:
                    row["status"], row["changes"] = "not checked", [str(exc)]
                    continue
                entry = next(
                    (m for m in page.get("models", []) if m.get("endpoint_id") == model.endpoint_id), None
                )
                if entry is None:
                    row["status"] = "gone from fal"
                elif not entry.get("openapi"):
                    row["status"] = "no schema published"
                else:
                    live, _ = openapi_schemas(entry["openapi"], model.endpoint_id)
                    row["changes"] = compare_inputs(vendored, live, entry["openapi"])
                    row["status"] = "changed" if row["changes"] else "up to date"
        return rows

    rows = anyio.run(check_all)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['tool']:<28} {row['alias']:<20} {row['endpoint']:<48} {row['status']}")
            for change in row["changes"]:
                print(f"    {change}")
    return 0 if all(row["status"] == "up to date" for row in rows) else 1


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    if not _sandbox_installed():
        print(SANDBOX_MISSING, file=sys.stderr)
        return 2
    from fal_mcp_sandbox import main as sandbox_main

    return sandbox_main(args.sandbox_args, prog="fal-mcp sandbox")


def version_text() -> str:
    """The core's version, each installed pack's and the sandbox's, read from the installed
    distributions (no pack is imported)."""
    import platform
    from importlib.metadata import PackageNotFoundError, entry_points, version

    from .hookspecs import PROJECT

    def installed(distribution: str) -> str | None:
        try:
            return version(distribution)
        except PackageNotFoundError:
            return None

    lines = [
        f"fal-mcp-core {installed('fal-mcp-core') or '?'} (Python {platform.python_version()}, {sys.prefix})"
    ]
    packs = sorted(
        {
            (entry.name, entry.dist.name if entry.dist else "?", entry.dist.version if entry.dist else "?")
            for entry in entry_points(group=PROJECT)
        }
    )
    width = max((len(name) for name, _, _ in packs), default=0)
    lines.append("packs:" if packs else "packs: none installed (e.g. pip install fal-mcp-image)")
    lines += [f"  {name:<{width}}  {distribution} {number}" for name, distribution, number in packs]
    sandbox = installed("fal-mcp-sandbox")
    lines.append(f"sandbox: fal-mcp-sandbox {sandbox}" if sandbox else "sandbox: not installed")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fal-mcp", description="MCP server for fal.ai generative models")
    parser.add_argument(
        "--version", action=_VersionAction, help="print the versions of the core and the installed packs"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the MCP server: over stdio (default), streamable HTTP or SSE (--transport)",
        description="Run the MCP server: over stdio for the client that starts it (default), or over the "
        "network with --transport http (streamable HTTP at /mcp), sse (/sse) or dual (stdio and http).",
    )
    serve.add_argument(
        "--sandbox",
        action="store_true",
        help="start the offline fal sandbox in-process and use it: no key, no network "
        "(needs fal-mcp-sandbox)",
    )
    serve.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default=None,
        help="stdio (default), http (streamable HTTP at /mcp), sse (/sse), dual (stdio + http)",
    )
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1, FAL_MCP_HOST)")
    serve.add_argument(
        "--port", type=int, default=None, help="port (default 8080, FAL_MCP_PORT; 0 picks one)"
    )
    serve.add_argument(
        "--stateless",
        action="store_true",
        help="streamable HTTP without sessions, for several replicas behind a load balancer",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes behind one port, for --transport http (default FAL_MCP_WORKERS, else the "
        "number of cores with --stateless, else 1); with more than 1, streamable HTTP runs stateless",
    )
    serve.set_defaults(run=cmd_serve)
    plugins = commands.add_parser("plugins", help="list installed packs and their status")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(run=cmd_plugins)
    tools = commands.add_parser("tools", help="list the tools the loaded packs provide")
    tools.add_argument("--json", action="store_true")
    tools.set_defaults(run=cmd_tools)
    models = commands.add_parser("models", help="the registered models")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    check = model_commands.add_parser(
        "check", help="compare each model's vendored schema with fal's live OpenAPI"
    )
    check.add_argument("--json", action="store_true")
    check.set_defaults(run=cmd_models_check)
    # Its options are the sandbox's own (fal_mcp_sandbox.build_parser, shared with `python -m
    # fal_mcp_sandbox`): everything after `sandbox`, --help included, goes to that parser (main).
    sandbox = commands.add_parser(
        "sandbox",
        help="run the offline fal sandbox alone (needs fal-mcp-sandbox; fal-mcp sandbox --help: its options)",
        add_help=False,
    )
    sandbox.set_defaults(run=cmd_sandbox, sandbox_args=[])
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        if args.command == "sandbox":  # the sandbox's parser reads them (cmd_sandbox)
            args.sandbox_args = rest
        elif rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        _setup_logging()
        settings = Settings.from_env()
        scrub_logs(settings.secrets())
        return args.run(args, settings)
    except BaseException as exc:
        return _stopped(exc)


def _stopped(exc: BaseException) -> int:
    """The exit status for what stopped a command, after its one-line message on stderr. What is not
    an expected stop (a bug, or argparse's own exit) is raised again."""
    leaves = _leaves(exc)
    if all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        return 130  # Ctrl-C: a clean stop, silent
    if len(leaves) == 1:
        from .plugins import PluginError

        leaf = leaves[0]
        if isinstance(leaf, ConfigError):
            print(f"fal-mcp: configuration error: {leaf}", file=sys.stderr)
            return 2
        if isinstance(leaf, (ListenError, PluginError)):
            print(f"fal-mcp: {leaf}", file=sys.stderr)
            return 1
    raise exc


if __name__ == "__main__":
    sys.exit(main())
