"""Sandbox throughput: how many fal requests per second the offline sandbox answers, so it is never
the bottleneck of the other benchmarks.

    .venv/bin/python benchmarks/sandbox_throughput.py [--seconds 3] [--clients 32]

Many concurrent keep-alive connections poll job status (the commonest request) as fast as they
can, from a separate process; then the same for submits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from urllib.parse import urlsplit

import httpx
from common import machine, sandbox_process


async def hammer(
    url: str, method: str, body: bytes, headers: dict, seconds: float, clients: int
) -> tuple[int, int]:
    """Keep-alive HTTP/1.1 over raw asyncio streams: a load generator light enough that the sandbox,
    not the client, is what is measured (httpx's pool slows down past a few concurrent requests)."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = [
        f"{method} {target} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Content-Length: {len(body)}",
        "Content-Type: application/json",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    done = errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        while time.perf_counter() < deadline:
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            done += 1
            errors += int(status_line.split()[1]) >= 400
        writer.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return done, errors


async def main(seconds: float, clients: int) -> int:
    with sandbox_process("--job-seconds", "1000") as (settings, _):
        headers = {"Authorization": f"Key {settings['FAL_KEY']}"}
        queue = settings["FAL_MCP_QUEUE_URL"]
        async with httpx.AsyncClient() as http:
            job = (
                await http.post(f"{queue}/fal-ai/flux/schnell", json={"prompt": "x"}, headers=headers)
            ).json()
        print(f"machine: {machine()}")
        for name, method, url, body in [
            ("status poll", "GET", job["status_url"] + "?logs=1", b""),
            ("submit", "POST", f"{queue}/fal-ai/flux/schnell", b'{"prompt": "x"}'),
        ]:
            count, errors = await hammer(url, method, body, headers, seconds, clients)
            print(
                f"{name}: {count / seconds:.0f} requests/s with {clients} concurrent clients "
                f"({errors} errors)"
            )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.seconds, args.clients)))
