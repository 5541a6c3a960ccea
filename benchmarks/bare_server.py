"""The baseline for the startup benchmark: a bare mcp 2.x server with one tool, over stdio."""

from mcp.server import MCPServer

server = MCPServer("bare")


@server.tool()
def echo(text: str) -> str:
    """Echo the text."""
    return text


if __name__ == "__main__":
    server.run("stdio")
