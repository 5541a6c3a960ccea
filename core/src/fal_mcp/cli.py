"""`fal-mcp`: serve, list packs and tools, run the offline sandbox (a distribution of its own)."""

from __future__ import annotations

import argparse
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


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import anyio

    if args.sandbox and not _sandbox_installed():
        print(SANDBOX_MISSING, file=sys.stderr)
        return 2
    transport = args.transport or os.environ.get("FAL_MCP_TRANSPORT", "").strip() or "stdio"
    if transport not in TRANSPORTS:
        raise ConfigError(f"FAL_MCP_TRANSPORT={transport!r} must be one of {', '.join(TRANSPORTS)}")
    http_settings = None
    if transport != "stdio":
        from .http import HttpSettings

        http_settings = HttpSettings.from_env(
            os.environ, host=args.host, port=args.port, stateless=True if args.stateless else None
        )
        http_settings.check_exposure()  # before anything starts
    registry = _registry(settings)
    active = [pack.name for pack in registry.packs if pack.status == "active"]
    log.info("serving %d tools from packs: %s", len(registry.tools), ", ".join(active) or "none")

    async def main() -> None:
        from .gateway import FalGateway
        from .server import ToolTable, serve_stdio

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
        try:
            # One gateway and one tool table, whatever the transports.
            async with (
                FalGateway(run_settings) as gateway,
                ToolTable(registry, run_settings, gateway) as table,
            ):
                table.runner.start_resuming()  # jobs a previous run left: followed to their end
                # What is loaded now lives as long as the server: keep it out of the garbage
                # collector's passes, and make those rarer: a full pass over a busy server's
                # objects stalled the event loop for ~100 ms (benchmarks/concurrency.py).
                gc.freeze()
                gc.set_threshold(*GC_THRESHOLDS)
                if transport == "stdio":
                    await serve_stdio(table)
                    return
                if http_settings is None:  # read above for every transport but stdio
                    raise RuntimeError(f"no HTTP settings for the {transport} transport")
                from .http import serve_http

                async with anyio.create_task_group() as group:
                    group.start_soon(_stop_on_signal, group.cancel_scope)
                    if transport == "dual":
                        group.start_soon(serve_http, table, http_settings, ("http",))
                        await serve_stdio(table)  # the stdio client leaving ends the server
                    else:
                        await serve_http(table, http_settings, (transport,))
                    group.cancel_scope.cancel()
        finally:
            if sandbox is not None:
                await sandbox.stop()

    anyio.run(main, backend="asyncio")
    return 0


async def _stop_on_signal(scope) -> None:
    import signal

    import anyio

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


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
    for row in rows:
        line = (
            f"{row['name']:<10} {row['distribution']} {row['version']:<8} {row['status']:<8} "
            f"{row['tools']} tools, {row['models']} models"
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
        async with FalGateway(settings) as gateway:
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

    return sandbox_main(["--host", args.host, "--port", str(args.port)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fal-mcp", description="MCP server for fal.ai generative models")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the MCP server (stdio)")
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
    sandbox = commands.add_parser("sandbox", help="run the offline fal sandbox alone (needs fal-mcp-sandbox)")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=0)
    sandbox.set_defaults(run=cmd_sandbox)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        settings = Settings.from_env()
        scrub_logs(settings.secrets())
        return args.run(args, settings)
    except ConfigError as exc:
        print(f"fal-mcp: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from .plugins import PluginError

        if isinstance(exc, PluginError):
            print(f"fal-mcp: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
