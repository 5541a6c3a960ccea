"""OAuth 2.1 resource server: access tokens checked as JWTs signed by the authorization server.

The MCP authorization spec makes this server a resource server: a client signs its user in at the
authorization server (FAL_MCP_OAUTH_ISSUER) and sends the access token it got as a bearer token.
Here a token is accepted when

- it is a JWS signed by one of the issuer's keys (its JWKS, found through the issuer's metadata),
  with the algorithm that key is for (RS*, PS*, ES*, EdDSA; never `none`, never an HMAC);
- `iss` is the issuer, `aud` holds this server's resource URL (FAL_MCP_OAUTH_AUDIENCE), `exp` has not
  passed and `nbf`/`iat` are not in the future (with LEEWAY seconds for clocks), `sub` is present.

Scopes are read (`scope`, space-separated, or `scp`, a list) but checked by the caller (http.Guard),
which answers a missing one 403 rather than 401.

Keys are fetched once and kept KEYS_MAX_AGE seconds. A token naming a key id we do not have makes
one fetch of the JWKS (the issuer rotated its keys), at most one per REFETCH_INTERVAL seconds, so
tokens with made-up key ids cannot make us hammer the issuer. joserfc and httpx are imported when a
token is first checked, never at import.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .config import ConfigError, url_setting

if TYPE_CHECKING:
    from mcp.server.auth.provider import AccessToken

log = logging.getLogger(__name__)

LEEWAY = 30  # seconds of clock difference allowed on exp, nbf and iat
REFETCH_INTERVAL = 30.0  # at most one JWKS fetch for an unknown key id per this many seconds
KEYS_MAX_AGE = 600.0  # keys are fetched again after this many seconds (a removed key counts until then)
MAX_TOKEN_LENGTH = 16 * 1024
MAX_DOCUMENT_BYTES = 1024 * 1024  # metadata and JWKS documents
FETCH_TIMEOUT = 10.0

# The algorithms a key may verify, by key type (and curve); a key's own "alg" narrows them to one.
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
OKP_ALGORITHMS = {"Ed25519": ("EdDSA", "Ed25519"), "Ed448": ("EdDSA", "Ed448")}
ACCEPTED = {*RSA_ALGORITHMS, *EC_ALGORITHMS.values(), "EdDSA", "Ed25519", "Ed448"}


class TokenRefused(Exception):
    """An access token that is not accepted; the message says why, for the WWW-Authenticate header
    (short, fixed texts: never the token or its claims)."""


def parse_scopes(value: object, *, commas: bool = True) -> tuple[str, ...]:
    """Scopes from a string (space-separated; comma-separated too with `commas`, for the setting: a
    token's `scope` claim is space-separated only, RFC 6749 3.3) or a list of strings, in order, no
    duplicates."""
    if isinstance(value, str):
        parts = (value.replace(",", " ") if commas else value).split()
    elif isinstance(value, (list, tuple)):
        parts = [part for part in value if isinstance(part, str)]
    else:
        return ()
    return tuple(dict.fromkeys(parts))


def metadata_urls(issuer: str) -> list[str]:
    """Where the issuer's metadata may be, in the order the MCP spec says to try (RFC 8414 first,
    then OpenID Connect Discovery; for an issuer with a path, each with the well-known part inserted
    after the host, and OpenID's appended too)."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if not path:
        return [
            origin + "/.well-known/oauth-authorization-server",
            origin + "/.well-known/openid-configuration",
        ]
    return [
        origin + "/.well-known/oauth-authorization-server" + path,
        origin + "/.well-known/openid-configuration" + path,
        origin + path + "/.well-known/openid-configuration",
    ]


def _same_url(a: object, b: str) -> bool:
    """Equal, a trailing slash aside ("https://as.example" is "https://as.example/")."""
    return isinstance(a, str) and a.rstrip("/") == b.rstrip("/")


def algorithms_for(key: Any) -> tuple[str, ...]:
    """The JWS algorithms `key` (a joserfc key) may verify: none for symmetric or encryption keys."""
    params = key.as_dict(private=False)
    if params.get("use", "sig") != "sig":
        return ()
    kty = params.get("kty")
    if kty == "RSA":
        allowed: tuple[str, ...] = RSA_ALGORITHMS
    elif kty == "EC":
        curve = EC_ALGORITHMS.get(params.get("crv", ""))
        allowed = (curve,) if curve else ()
    elif kty == "OKP":
        allowed = OKP_ALGORITHMS.get(params.get("crv", ""), ())
    else:  # "oct" and anything unknown: a shared secret is never a verification key here
        return ()
    alg = params.get("alg")
    if alg is None:
        return allowed
    return (alg,) if alg in allowed else ()


class JwtVerifier:
    """Checks access tokens issued by `issuer` for `audience`; the mcp SDK's TokenVerifier protocol
    (`verify_token`), plus `check`, which says why a token is refused."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        leeway: int = LEEWAY,
        refetch_interval: float = REFETCH_INTERVAL,
        keys_max_age: float = KEYS_MAX_AGE,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.refetch_interval = refetch_interval
        self.keys_max_age = keys_max_age
        self._keys: list[Any] | None = None  # joserfc keys of the last JWKS fetched
        self._jwks_uri: str | None = None
        self._loaded_at = -math.inf  # time.monotonic() of the last good fetch
        self._refetched_at = -math.inf  # of the last fetch made for an unknown key id
        self._failed_at = -math.inf  # of the last fetch that failed
        self._lock: Any = None  # an anyio.Lock, made on first use

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            return await self.check(token)
        except TokenRefused as refused:
            log.debug("access token refused: %s", refused)
            return None

    async def check(self, token: str) -> AccessToken:
        """The token's identity, or TokenRefused."""
        from joserfc import errors, jws, jwt
        from mcp.server.auth.provider import AccessToken

        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenRefused("token too long")
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (errors.JoseError, ValueError, UnicodeError):
            raise TokenRefused("not a signed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
            raise TokenRefused("not a signed JWT")
        if alg not in ACCEPTED:  # "none", HMAC (a secret shared with whom?), anything unknown
            raise TokenRefused("signing algorithm not accepted")
        keys = await self._keys_for(kid, alg)
        if self._keys is None:
            raise TokenRefused("the authorization server's keys could not be fetched")
        if not keys:
            raise TokenRefused(
                "signed by a key the issuer does not publish, or with an algorithm it is not for"
            )
        for key in keys:
            try:
                with warnings.catch_warnings():  # joserfc warns that RFC 9864 prefers Ed25519 to EdDSA
                    warnings.filterwarnings("ignore", message="EdDSA is deprecated")
                    claims = jwt.decode(token, key, algorithms=[alg]).claims
                break
            except errors.BadSignatureError:
                continue
            except (errors.JoseError, ValueError):
                raise TokenRefused("not a valid signed JWT") from None
        else:
            raise TokenRefused("bad signature")
        self._check_claims(claims)
        client_id = claims.get("client_id", claims.get("azp", ""))
        return AccessToken(
            token=token,
            client_id=client_id if isinstance(client_id, str) else "",
            scopes=list(parse_scopes(claims.get("scope", claims.get("scp")), commas=False)),
            expires_at=int(claims["exp"]),
            resource=self.audience,
            subject=claims["sub"],
            claims=claims,
        )

    def _check_claims(self, claims: dict[str, Any]) -> None:
        from joserfc import errors
        from joserfc.jwt import JWTClaimsRegistry

        if not _same_url(claims.get("iss"), self.issuer):
            raise TokenRefused("wrong issuer")
        audiences = list(
            dict.fromkeys([self.audience, self.audience.rstrip("/"), self.audience.rstrip("/") + "/"])
        )
        registry = JWTClaimsRegistry(
            leeway=self.leeway,
            exp={"essential": True},
            sub={"essential": True},
            aud={"essential": True, "values": audiences},
        )
        try:
            registry.validate(claims)
        except errors.ExpiredTokenError:
            raise TokenRefused("token expired") from None
        except errors.MissingClaimError as missing:
            raise TokenRefused(f"missing claim {missing.claim}") from None
        except errors.InvalidClaimError as invalid:
            if invalid.claim == "aud":
                raise TokenRefused("token not issued for this server (aud)") from None
            if invalid.claim in ("nbf", "iat"):
                raise TokenRefused("token not valid yet") from None
            raise TokenRefused(f"invalid claim {invalid.claim}") from None

    async def _keys_for(self, kid: str | None, alg: str) -> list[Any]:
        """The keys that may verify a token with this header, fetching the JWKS when needed."""
        import anyio

        if self._lock is None:
            self._lock = anyio.Lock()
        arrived = time.monotonic()
        if self._keys is None or arrived - self._loaded_at > self.keys_max_age:
            async with self._lock:
                if (self._keys is None or time.monotonic() - self._loaded_at > self.keys_max_age) and (
                    time.monotonic() - self._failed_at >= self.refetch_interval
                ):
                    await self._fetch()
        found = self._matching(kid, alg)
        if found or self._keys is None:
            return found
        # Not among the keys we have: the issuer may have rotated them. One fetch per interval, and
        # none if the keys were fetched since this request arrived (they are current).
        async with self._lock:
            found = self._matching(kid, alg)  # another request may have fetched them meanwhile
            last = max(self._refetched_at, self._failed_at)
            if not found and self._loaded_at < arrived and time.monotonic() - last >= self.refetch_interval:
                self._refetched_at = time.monotonic()
                await self._fetch()
                found = self._matching(kid, alg)
        return found

    def _matching(self, kid: str | None, alg: str) -> list[Any]:
        return [
            key for key in self._keys or () if (kid is None or key.kid == kid) and alg in algorithms_for(key)
        ]

    async def _fetch(self) -> None:
        """Fetch the JWKS (discovering its URL first if need be). On failure the keys we had are kept."""
        from joserfc import jwk

        try:
            if self._jwks_uri is None:
                self._jwks_uri = await self._discover()
            document = await _get_json(self._jwks_uri)
            entries = document.get("keys")
            if not isinstance(entries, list):
                raise ValueError("the JWKS has no list of keys")
        except (OSError, ValueError) as error:
            self._failed_at = time.monotonic()
            self._jwks_uri = None  # discovered again next time
            log.warning("could not fetch the signing keys of %s: %s", self.issuer, error)
            return
        keys = []
        for entry in entries:
            try:
                keys.append(jwk.import_key(entry))
            except Exception as error:  # a key of a kind joserfc does not know: skipped, the rest kept
                log.info("skipping a key of the issuer's JWKS: %s", error)
        self._keys = keys
        self._loaded_at = time.monotonic()
        log.info("fetched %d signing key(s) of %s", len(keys), self.issuer)

    async def _discover(self) -> str:
        """The issuer's jwks_uri, from the first metadata document that names one."""
        problems = []
        for url in metadata_urls(self.issuer):
            try:
                metadata = await _get_json(url)
            except (OSError, ValueError) as error:
                problems.append(f"{url}: {error}")
                continue
            if not _same_url(metadata.get("issuer"), self.issuer):
                problems.append(f"{url}: names another issuer")
                continue
            jwks_uri = metadata.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                problems.append(f"{url}: no jwks_uri")
                continue
            try:
                return url_setting("jwks_uri", jwks_uri)
            except ConfigError as error:
                problems.append(str(error))
        raise ValueError("no metadata with a jwks_uri: " + "; ".join(problems))


async def _get_json(url: str) -> dict[str, Any]:
    from .documents import get_json

    return await get_json(url, timeout=FETCH_TIMEOUT, limit=MAX_DOCUMENT_BYTES)
