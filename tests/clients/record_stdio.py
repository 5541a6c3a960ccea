"""Runs a stdio MCP server and writes down what its client sends it, line by line, before the server
reads it: `python record_stdio.py LOG COMMAND [ARG]...`. A generic client (the MCP Inspector, the
TypeScript SDK) spawns this instead of the server, so tests/test_generic_clients.py can read the exact
JSON-RPC the server received. The server's stdout and stderr are this process's own."""

from __future__ import annotations

import signal
import subprocess
import sys


def main() -> int:
    log_path, command = sys.argv[1], sys.argv[2:]
    server = subprocess.Popen(command, stdin=subprocess.PIPE)

    def stop(signum, frame):  # the client gave up waiting: the server goes too
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    with open(log_path, "ab") as log:
        for line in sys.stdin.buffer:
            log.write(line)
            log.flush()
            try:
                server.stdin.write(line)
                server.stdin.flush()
            except BrokenPipeError:
                break
    try:
        server.stdin.close()  # end of input: the server shuts down as it would under the client itself
    except BrokenPipeError:
        pass
    return server.wait()


if __name__ == "__main__":
    sys.exit(main())
