"""Who a call belongs to. Outputs, resources and jobs are visible only to their owner.

The owner is decided by the transport, never by anything the client says about itself: the stdio
client (one per process), an HTTP session, the holder of FAL_MCP_AUTH_TOKEN when it is set, or the
subject of a validated OAuth access token.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    # A stable name for the owner: "stdio", "token:<digest>", "oauth:<digest>", "session:<random>".
    key: str
    # False for a caller that cannot be recognised again (stateless HTTP without a token): it lists
    # nothing, and what it made is reachable only through ids it was given (unguessable job ids).
    listable: bool = True
    # The OAuth access token's subject when the caller signed in (None otherwise): what per-person fal
    # keys are looked up by. Never part of `key` in clear.
    subject: str | None = None


STDIO = Principal("stdio")
ANONYMOUS = Principal("anonymous", listable=False)


def token_principal(token: str) -> Principal:
    """The holder of a bearer token; named by a digest, never by the token itself."""
    import hashlib

    return Principal("token:" + hashlib.sha256(b"fal-mcp principal\0" + token.encode()).hexdigest()[:24])


def oauth_principal(issuer: str, subject: str) -> Principal:
    """The user an OAuth access token was issued to: its subject, unique per issuer. Named by a digest
    of both (a subject may be an e-mail address); the subject itself is kept for per-person keys."""
    import hashlib

    digest = hashlib.sha256(issuer.encode() + b"\0" + subject.encode()).hexdigest()
    return Principal("oauth:" + digest[:24], subject=subject)


def session_principal() -> Principal:
    import secrets

    return Principal("session:" + secrets.token_hex(12))
