"""Fails when fal_client changes under the one module that adapts it."""

from __future__ import annotations

import inspect

import fal_client
import fal_client.client as client

from fal_mcp import falclient


def test_the_constants_we_set_still_exist_and_are_read_at_call_time(monkeypatch):
    for name in (*falclient.HOST_CONSTANTS, "MAX_ATTEMPTS", "QUEUE_POLL_TIMEOUT"):
        monkeypatch.setattr(client, name, getattr(client, name))  # restored after the test
        assert hasattr(client, name), name
    # each host constant is read inside the functions that build URLs, not captured at import
    sources = inspect.getsource(client)
    assert "url = QUEUE_URL_FORMAT + application" in sources
    assert "url = RUN_URL_FORMAT + application" in sources
    assert 'f"{REST_URL}/storage/auth/token' in sources
    assert 'CDN_URL + "/files/upload"' in sources
    assert "for attempt in range(1, MAX_ATTEMPTS + 1)" in inspect.getsource(client._async_maybe_retry_request)


def test_configure_points_every_host_and_disables_internal_retries(monkeypatch):
    for name in (*falclient.HOST_CONSTANTS, "MAX_ATTEMPTS"):
        monkeypatch.setattr(client, name, getattr(client, name))
    falclient.configure(
        {
            "run": "http://127.0.0.1:1/run",
            "queue": "http://127.0.0.1:1/queue/",
            "rest": "http://127.0.0.1:1/rest",
            "cdn": "http://127.0.0.1:1/cdn",
        }
    )
    assert client.RUN_URL_FORMAT == "http://127.0.0.1:1/run/"
    assert client.QUEUE_URL_FORMAT == "http://127.0.0.1:1/queue/"
    assert client.REST_URL == "http://127.0.0.1:1/rest"
    assert client.CDN_URL == "http://127.0.0.1:1/cdn"
    assert client.MAX_ATTEMPTS == 1


def test_private_helpers_we_use_keep_their_shape():
    assert inspect.iscoroutinefunction(client._async_request)
    assert list(inspect.signature(client._async_request).parameters)[:3] == ["client", "method", "url"]
    handle_fields = {f for f in client.AsyncRequestHandle.__dataclass_fields__}
    assert {"request_id", "response_url", "status_url", "cancel_url", "client"} <= handle_fields
    assert "_client" in client.AsyncClient.__dict__  # the lazily created httpx client we replace
    # fal_client's backup-domain policy, reused by falclient's transport (AsyncBackupDomainTransport's pieces)
    assert {"fal.run", "queue.fal.run"} <= set(client._BACKUP_DOMAINS)
    for name in ("_limit_connect_timeout", "_fallback_url", "_backup_request", "_log_backup"):
        assert callable(getattr(client, name)), name
    assert "_backup_request(request)" in inspect.getsource(client.AsyncBackupDomainTransport)
    assert isinstance(client.USER_AGENT, str)
    source = inspect.getsource(client.AsyncClient)
    assert "await self._client" in source and '"Authorization": auth.header_value' in source
    assert {"Queued", "InProgress", "Completed"} <= set(dir(fal_client))
    assert "error" in client.Completed.__dataclass_fields__
    # the status stream reuses fal_client's own parsing of a status object
    parsed = client.AsyncRequestHandle._parse_status(None, {"status": "IN_QUEUE", "queue_position": 3})
    assert parsed == client.Queued(position=3)
    assert callable(client._raise_for_status)
