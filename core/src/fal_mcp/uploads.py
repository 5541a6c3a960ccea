"""Local files to fal storage, streamed from disk: never held whole in memory.

fal_client's `upload_file` reads the whole file (`upload(await file.read())`, then its httpx request
and its multipart slicing copy it again), and its multipart upload keeps ten 10 MiB parts in flight.
Here the same protocol is spoken with fal_client's own pieces (its CDN token manager, its multipart
class, its v3 and storage upload functions, its URL constants as falclient.configure set them), with
the body read from the file's descriptor a chunk at a time:

- up to fal_client's MULTIPART_THRESHOLD (100 MiB): one `POST {CDN}/files/upload` whose body is an
  async generator of CHUNK-sized reads, Content-Length set (no chunked encoding); if that fails,
  fal_client's fallback, the signed storage upload (`POST {REST}/storage/upload/initiate`, then a PUT
  of the same streamed body), as `AsyncClient.upload` does;
- over it: multipart on the token's base_url (`/files/upload/multipart`, a PUT per part returning its
  ETag, `/complete`), each part read from disk only when it is sent, PARTS_IN_FLIGHT at once.

So an upload holds at most about PARTS_IN_FLIGHT parts (multipart) or a couple of CHUNKs (single POST),
whatever the file's size. Reads run in worker threads (`os.pread`: no shared file offset, so parts can
be read concurrently).

Every body is an async generator, even a part's (with its Content-Length: the same requests on the
wire): httpx's Response and its stream refer to each other, a reference cycle that keeps the Request,
and a bytes body with it, alive until the cycle collector runs, which in a served process (cli.py raises
its thresholds) may be hours later. A finished generator holds nothing. Bytes already in memory
(`InMemory`: an image made here) go the same way, sliced without copies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CHUNK = 1024 * 1024  # a read of the single POST's body
PARTS_IN_FLIGHT = 2  # multipart parts (fal_client's MULTIPART_CHUNK_SIZE, 10 MiB) read and sent at once


@dataclass
class OpenFile:
    """A local file opened for upload (media.open_local_file checked it): its descriptor, the size it
    had when opened (what is uploaded), and its name. Close it with `close()`."""

    name: str
    descriptor: int
    size: int

    def read(self, offset: int, length: int) -> bytes:
        """Blocking: `length` bytes at `offset` (fewer only at the end of the size), or MediaError if the
        file shrank meanwhile."""
        from .media import MediaError

        chunks, wanted = [], min(length, self.size - offset)
        while wanted > 0:
            chunk = os.pread(self.descriptor, wanted, offset)
            if not chunk:
                raise MediaError(f"{self.name} shrank while it was being uploaded")
            chunks.append(chunk)
            offset += len(chunk)
            wanted -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def sha256(self) -> str:
        """Blocking: the hex SHA-256 of the file's first `size` bytes, read CHUNK at a time."""
        import hashlib

        digest = hashlib.sha256()
        for offset in range(0, self.size, CHUNK):
            digest.update(self.read(offset, CHUNK))
        return digest.hexdigest()

    def close(self) -> None:
        if self.descriptor >= 0:
            os.close(self.descriptor)
            self.descriptor = -1


@dataclass
class InMemory:
    """Bytes to upload that are in memory already, read as an OpenFile is (`read`: slices). `name`: None
    sends none (fal names the file), as fal_client's `upload` does."""

    name: str | None
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


Source = OpenFile | InMemory


async def _read(source: Source, offset: int, length: int) -> bytes:
    """`length` bytes of `source` at `offset`: from disk in a worker thread, from memory here."""
    import anyio

    if isinstance(source, InMemory):
        return source.read(offset, length)
    return await anyio.to_thread.run_sync(source.read, offset, length)


def body(source: Source, start: int = 0, length: int | None = None):
    """`length` bytes of `source` from `start` (default: all of it) as an async generator of CHUNK-sized
    reads: sent, it holds nothing (see the module's doc)."""
    end = source.size if length is None else min(source.size, start + length)

    async def chunks():
        for offset in range(start, end, CHUNK):
            yield await _read(source, offset, min(CHUNK, end - offset))

    return chunks()


async def upload_file(client, file: Source, content_type: str) -> str:
    """Store `file` (an OpenFile, or InMemory bytes) on fal storage with fal_client `client` (fal_client's
    AsyncClient, its hosts set by falclient.configure); its URL. Errors as fal_client's
    (FalClientHTTPError, httpx errors)."""
    from fal_client import client as fal

    token_manager = await client._token_manager
    if file.size > fal.MULTIPART_THRESHOLD:
        async with client._cdn_client() as cdn:
            return await _multipart(cdn, token_manager, file, content_type)
    headers = {"Content-Type": content_type, "Content-Length": str(file.size)}
    if file.name is not None:
        headers["X-Fal-File-Name"] = file.name

    async def v3() -> str:
        token = await token_manager.get_token()
        async with client._cdn_client() as cdn:
            sent = {**headers, "Authorization": f"{token.token_type} {token.token}"}
            # fal_client's request, with a streamed body in place of bytes (httpx takes either)
            return await fal._async_upload_v3(cdn, data=body(file), headers=sent)

    async def storage() -> str:  # fal_client's fallback: the signed storage upload
        http = await client._client
        return await _storage(fal, http, await client._auth, file, content_type)

    return await fal._async_try_upload_with_fallback(
        [(repository, attempt) for repository, attempt in (("fal_v3", v3), ("fal", storage))]
    )


async def _storage(fal, http, auth, file: Source, content_type: str) -> str:
    """fal_client's `_async_upload_via_storage` (initiate, then PUT the bytes to the signed URL), the PUT's
    body streamed with its Content-Length."""
    initiated = await fal._async_maybe_retry_request(
        http,
        "POST",
        f"{fal.REST_URL}/storage/upload/initiate?storage_type=gcs",
        json=fal._storage_upload_payload(file.name, content_type),
        headers=fal._storage_upload_headers(auth, None),
    )
    answer = initiated.json()
    await fal._async_maybe_retry_request(
        http,
        "PUT",
        answer["upload_url"],
        content=body(file),
        headers={"Content-Type": content_type, "Content-Length": str(file.size)},
        timeout=None,
    )
    return answer["file_url"]


async def _multipart(cdn, token_manager, file: Source, content_type: str) -> str:
    """fal_client's AsyncMultipartUpload (create, a PUT per part, complete), each part read just before it
    is sent (`_put_part`), PARTS_IN_FLIGHT at a time (fal_client's own `save_file` keeps ten)."""
    import anyio
    from fal_client import client as fal

    upload = fal.AsyncMultipartUpload(
        file_name=file.name or "upload.bin",
        client=cdn,
        token_manager=token_manager,
        content_type=content_type,
    )
    await upload.create()
    size = upload.chunk_size
    numbers = iter(range(1, (file.size + size - 1) // size + 1))

    async def sender() -> None:
        for number in numbers:  # shared: each sender takes the next part not yet taken
            await _put_part(fal, upload, number, file, size)

    async with anyio.create_task_group() as group:
        for _ in range(PARTS_IN_FLIGHT):
            group.start_soon(sender)
    upload._parts.sort(key=lambda part: part["partNumber"])
    return await upload.complete()


async def _put_part(fal, upload, number: int, file: Source, size: int) -> None:
    """AsyncMultipartUpload.upload_part's request (PUT {access_url}/multipart/{upload_id}/{n}, its
    headers, the ETag answered recorded), the part read from `file` now and sent as a generator with
    its Content-Length, so that nothing keeps it once sent (the module's doc)."""
    start = (number - 1) * size
    length = min(size, file.size - start)
    part = await _read(file, start, length)
    if len(part) != length:
        from .media import MediaError

        raise MediaError(f"{file.name} shrank while it was being uploaded")

    async def once():
        nonlocal part
        data, part = part, b""
        yield data

    headers = await upload.get_auth_headers()
    response = await fal._async_request(
        upload._client,
        "PUT",
        f"{upload.access_url}/multipart/{upload.upload_id}/{number}",
        headers={
            **headers,
            "Content-Type": upload.content_type,
            "Content-Length": str(length),
            "Accept-Encoding": "identity",  # as fal_client: so that the ETag header comes back
        },
        content=once(),
        timeout=None,
    )
    upload._parts.append({"partNumber": number, "etag": response.headers["etag"]})
