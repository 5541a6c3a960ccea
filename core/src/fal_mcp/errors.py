"""The one mapping from failures to messages a person can act on.

Whatever the transport, a failed tool call becomes an isError result whose
text comes from here: never a traceback, never the API key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

KEY_HELP = (
    "Set FAL_KEY to an API key from https://fal.ai/dashboard/keys (or FAL_KEY_ID and "
    "FAL_KEY_SECRET), or start the server with --sandbox to try it offline."
)


class ToolError(Exception):
    """A failure to report to the user as it is. Packs raise it for their own refusals.

    `kind` says what happened, as data (never read back from the message): "refused" (the call was
    not made: bad or unaffordable input), "failed" (fal or the model failed), "cancelled", "timeout".
    `status` is the HTTP status fal answered with, where there was one (403: the key lacks permission).
    """

    def __init__(self, message: str, kind: str = "failed", status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class ArgumentError(ToolError):
    """An argument of the call is wrong: names the field; the core adds "Invalid arguments for <tool>:".

        raise ArgumentError("scale", "aura_sr only makes 4x upscales")

    `tool`, when set, is the tool the arguments were for (submit_job starts another tool); else the
    tool that raised it.
    """

    def __init__(self, field: str, message: str, *, tool: str | None = None) -> None:
        super().__init__(f"{field}: {message}", kind="refused")
        self.field = field
        self.tool = tool


class ModelFailedError(Exception):
    """fal ran the job and the model reported an error."""

    def __init__(self, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type


def field_path(loc: Iterable[Any]) -> str:
    """`["body", "image_size", "width"]` -> `image_size.width`."""
    parts = [str(part) for part in loc if part != "body"]
    return ".".join(parts) or "input"


def detail_text(detail: Any) -> str:
    if isinstance(detail, list):
        items = []
        for item in detail:
            if isinstance(item, dict):
                items.append(f"{field_path(item.get('loc', ()))}: {item.get('msg', item)}")
            else:
                items.append(str(item))
        return "; ".join(items)
    if isinstance(detail, dict):
        error = detail.get("error", detail)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or error)
        return str(error)
    return str(detail)


# How much of a rejected value a message echoes back: enough to recognise it, never a megabyte.
ECHO_LIMIT = 60


def shown(value: Any, limit: int = ECHO_LIMIT) -> str:
    """`repr(value)`, cut to `limit` characters, for quoting user input in a message."""
    text = repr(value[: limit + 1] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[:limit] + "..."


# A part of a secret shorter than this is not scrubbed on its own (it would blank common words).
MIN_SECRET_PART = 8


def secret_forms(secrets: Iterable[str | None]) -> list[str]:
    """Every form in which a secret could show: itself, each half of an `id:secret` key, and each of
    those URL-encoded; longest first, so a whole key is replaced before its halves."""
    from urllib.parse import quote, quote_plus

    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        parts = [secret, *(part for part in secret.split(":") if len(part) >= MIN_SECRET_PART)]
        for part in parts:
            forms.update({part, quote(part, safe=""), quote_plus(part)})
    return sorted(forms, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """`text` without `secrets`, nor any user's fal key in use in this process (fal_keys.py), in any
    of their forms."""
    from .fal_keys import live_forms

    forms = secret_forms(secrets)
    users = live_forms()
    if users:
        forms = sorted({*forms, *users}, key=len, reverse=True)
    for form in forms:
        text = text.replace(form, "***")
    return text


class _ScrubbingFilter(logging.Filter):
    """Takes secrets out of every record a handler writes, whoever logged it: libraries (fal_client,
    httpx) log upstream error text, which may quote the key."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secret_forms(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info), self.secrets)
        return True


def scrub_logs(secrets: Iterable[str | None]) -> None:
    """Make every handler of the root logger drop `secrets`, and every user's fal key in use
    (fal_keys.py), from what it writes."""
    present = [secret for secret in secrets if secret]
    for handler in logging.getLogger().handlers:
        handler.addFilter(_ScrubbingFilter(present))


def describe(exc: BaseException, *, endpoint_id: str = "", retries: int = 0) -> str:
    """A message for `exc`, raised while talking to fal about `endpoint_id`."""
    import httpx
    from fal_client.auth import MissingCredentialsError
    from fal_client.client import FalClientHTTPError

    where = f" for {endpoint_id}" if endpoint_id else ""
    tried = f" after {retries + 1} attempts" if retries else ""
    if isinstance(exc, ToolError):
        return str(exc)
    if isinstance(exc, MissingCredentialsError):
        return f"No fal API key is configured. {KEY_HELP}"
    if isinstance(exc, ModelFailedError):
        kind = f" ({exc.error_type})" if exc.error_type else ""
        return f"The model{where} failed{kind}: {exc}"
    if isinstance(exc, FalClientHTTPError):
        status, detail = exc.status_code, detail_text(exc.message)
        if status == 401:
            return f"fal rejected the API key (401). Check that FAL_KEY is a valid, current key. {detail}".strip()
        if status == 403:
            return (
                f"fal refused the request{where} (403): {detail}. The key lacks permission for this "
                "(some APIs need an admin key) or the account needs credit."
            )
        if status == 404:
            return f"fal does not know{where or ' this'} (404): {detail}"
        if status == 422:
            return f"fal rejected the input{where} (422): {detail}"
        if status == 429:
            return (
                f"fal is rate-limiting requests (429){tried}{where}; wait a minute and try again. {detail}"
            ).strip()
        if status >= 500:
            return f"fal had a server error ({status}){tried}{where}: {detail}. Try again later."
        return f"fal answered {status}{where}: {detail}"
    if isinstance(exc, httpx.TimeoutException):
        return f"fal did not answer in time{tried}{where} ({type(exc).__name__}). Try again later."
    if isinstance(exc, httpx.TransportError):
        return (
            f"Could not reach fal{tried}{where} ({type(exc).__name__}: {exc}). "
            "Check the network connection and the FAL_MCP_*_URL settings."
        )
    return f"Unexpected error{where}: {type(exc).__name__}: {exc}"
