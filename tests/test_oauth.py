"""OAuth 2.1 resource server (oauth.py, http.Guard): a real authorization server built on the mcp SDK's
auth routes issues JWTs signed with joserfc; fal-mcp serves over HTTP against the sandbox and checks
them. Everything listens on 127.0.0.1; no token expiry is waited for (expired tokens are minted
expired)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest

from fal_mcp.config import ConfigError
from fal_mcp.http import HttpSettings
from fal_mcp.oauth import metadata_urls, parse_scopes

from .conftest import INITIALIZE, MCP_HEADERS, listed_outputs, server_env

pytestmark = pytest.mark.anyio
SCOPE = "fal:use"
STATIC_TOKEN = "static-token-" + secrets.token_hex(16)


# -- the authorization server ------------------------------------------------------------------------


class Provider:
    """The SDK's OAuthAuthorizationServerProvider for the tests: clients and codes in memory; the
    user who signs in is `server.user`; access tokens are JWTs for the requested resource."""

    def __init__(self, server: AuthServer) -> None:
        self.server = server
        self.clients: dict = {}
        self.codes: dict = {}
        self.resources: list = []  # the RFC 8707 resource of each token issued

    async def get_client(self, client_id):
        return self.clients.get(client_id)

    async def register_client(self, client_info):
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client, params):
        from mcp.server.auth.provider import AuthorizationCode, construct_redirect_uri

        code = secrets.token_urlsafe(24)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [],
            expires_at=time.time() + 300,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject=self.server.user,
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(self, client, authorization_code):
        return self.codes.get(authorization_code)

    async def exchange_authorization_code(self, client, authorization_code):
        from mcp.shared.auth import OAuthToken

        self.codes.pop(authorization_code.code, None)
        self.resources.append(authorization_code.resource)
        scope = " ".join(authorization_code.scopes)
        token = self.server.mint(
            authorization_code.subject,
            scope=scope,
            aud=authorization_code.resource,
            client_id=client.client_id,
        )
        return OAuthToken(access_token=token, expires_in=300, scope=scope)

    async def load_refresh_token(self, client, refresh_token):
        return None

    async def exchange_refresh_token(self, client, refresh_token, scopes):
        raise NotImplementedError

    async def load_access_token(self, token):
        return None

    async def revoke_token(self, token):
        return None


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class AuthServer:
    """A real authorization server on 127.0.0.1: the mcp SDK's routes (RFC 8414 metadata, /authorize,
    /token, /register) over `Provider`, plus what they do not serve: the JWKS, and an OpenID
    configuration naming it (the SDK's RFC 8414 document has no jwks_uri, so the resource server
    must fall back to OpenID discovery). Publishes an RSA key (kid k1), an EC P-256 key (e1) and an
    Ed25519 key (o1)."""

    def __init__(self) -> None:
        from joserfc import jwk

        self.rsa = jwk.RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256", "use": "sig"})
        self.keys = [
            self.rsa,
            jwk.ECKey.generate_key("P-256", parameters={"kid": "e1"}),
            jwk.OKPKey.generate_key("Ed25519", parameters={"kid": "o1"}),
        ]
        self.user = "nobody"
        self.jwks_fetches = 0
        self.provider = Provider(self)
        self.issuer = ""
        self.audience = ""  # the resource tokens are minted for unless said otherwise

    def key(self, kid: str):
        return next(key for key in self.keys if key.kid == kid)

    def rotate(self) -> None:
        """A new RSA key k2 replaces every published key."""
        from joserfc import jwk

        self.rsa = jwk.RSAKey.generate_key(2048, parameters={"kid": "k2", "alg": "RS256", "use": "sig"})
        self.keys = [self.rsa]

    def mint(
        self, sub, *, scope=SCOPE, aud=None, iss=None, expires_in=300, key=None, alg=None, **claims
    ) -> str:
        from joserfc import jwt

        now = int(time.time())
        key = key or self.rsa
        alg = alg or {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}[key.key_type]
        body = {
            "iss": iss or self.issuer,
            "aud": aud or self.audience,
            "iat": now,
            "exp": now + expires_in,
            "scope": scope,
            **claims,
        }
        if sub is not None:
            body["sub"] = sub
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode({"alg": alg, "kid": key.kid}, body, key, algorithms=[alg])

    def forged(self, header: dict, claims: dict, sign) -> str:
        """A compact JWS made by hand: `sign(signing_input) -> bytes`."""
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        return signing_input + "." + b64(sign(signing_input.encode()))

    def claims(self, sub: str) -> dict:
        now = int(time.time())
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "iat": now,
            "exp": now + 300,
            "scope": SCOPE,
        }

    def app(self):
        from mcp.server.auth.routes import build_metadata, create_auth_routes
        from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
        from pydantic import AnyHttpUrl, ConfigDict, TypeAdapter
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        # the issuer as written (AnyHttpUrl alone would add a slash: "http://127.0.0.1:port/")
        issuer = TypeAdapter(AnyHttpUrl, config=ConfigDict(url_preserve_empty_path=True)).validate_python(
            self.issuer
        )
        registration = ClientRegistrationOptions(enabled=True, valid_scopes=[SCOPE, "other"])
        metadata = build_metadata(issuer, None, registration, RevocationOptions())
        openid = {**metadata.model_dump(mode="json", exclude_none=True), "jwks_uri": self.issuer + "/jwks"}

        async def openid_configuration(request):
            return JSONResponse(openid)

        async def jwks(request):
            self.jwks_fetches += 1
            return JSONResponse({"keys": [key.as_dict(private=False) for key in self.keys]})

        routes = create_auth_routes(self.provider, issuer, client_registration_options=registration)
        routes += [
            Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
            Route("/jwks", jwks, methods=["GET"]),
        ]
        return Starlette(routes=routes)

    @contextmanager
    def running(self):
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.issuer = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(self.app(), log_config=None, access_log=False, lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30  # a hang guard
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            assert server.started, "the authorization server did not start"
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def fal_mcp_server(
    auth: AuthServer, sandbox, *, stateless=False, static_token=None, transport="http", **settings
):
    """`fal-mcp serve --transport <transport>` signing users in at `auth`; yields its base URL."""
    port = free_port()  # the audience names the port, so it is chosen first
    base = f"http://127.0.0.1:{port}"
    audience_before, auth.audience = auth.audience, base + "/mcp"  # what auth.mint() aims at meanwhile
    env = server_env(
        {
            **sandbox.env(),
            "FAL_MCP_OAUTH_ISSUER": auth.issuer,
            "FAL_MCP_OAUTH_AUDIENCE": auth.audience,
            "FAL_MCP_OAUTH_SCOPES": SCOPE,
            **({"FAL_MCP_AUTH_TOKEN": static_token} if static_token else {}),
            **settings,
        }
    )
    args = ["serve", "--transport", transport, "--port", str(port), *(["--stateless"] if stateless else [])]
    process = subprocess.Popen(
        [sys.executable, "-m", "fal_mcp.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60  # a hang guard
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("fal-mcp did not start: " + process.stderr.read().decode(errors="replace"))
            time.sleep(0.05)
        yield base
    finally:
        auth.audience = audience_before
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()


@pytest.fixture(scope="module")
def auth():
    with AuthServer().running() as server:
        yield server


@pytest.fixture(scope="module")
def server(auth, thread_sandbox):
    """One fal-mcp for the module, with OAuth and a static token both set."""
    with fal_mcp_server(auth, thread_sandbox, static_token=STATIC_TOKEN) as base:
        yield base


def user() -> str:
    return "user-" + secrets.token_hex(6)  # subjects of their own: the module's server is shared


def mcp_client(url: str, token: str | None = None, auth=None):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else None
    http = httpx2.AsyncClient(headers=headers, auth=auth, timeout=httpx2.Timeout(30, read=120))
    return Client(streamable_http_client(url, http_client=http), mode="legacy")


async def initialize(base: str, token: str | None) -> httpx.Response:
    headers = {**MCP_HEADERS, **({"Authorization": f"Bearer {token}"} if token else {})}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(base + "/mcp", json=INITIALIZE, headers=headers)


# -- discovery and sign-in ---------------------------------------------------------------------------


async def test_the_protected_resource_metadata_names_the_issuer(auth, server):
    expected = {
        "resource": server + "/mcp",
        "authorization_servers": [auth.issuer],
        "scopes_supported": [SCOPE],
        "bearer_methods_supported": ["header"],
        "resource_name": "fal-mcp",
    }
    async with httpx.AsyncClient() as http:
        for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
            # public, also to a browser-based client of another origin
            answer = await http.get(server + path, headers={"Origin": "https://inspector.example"})
            assert answer.status_code == 200, path
            assert answer.json() == expected
            assert answer.headers["access-control-allow-origin"] == "*"
        assert (await http.get(server + "/health")).status_code == 200


async def test_without_a_token_the_answer_points_to_the_metadata(server):
    answer = await initialize(server, None)
    assert answer.status_code == 401
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{server}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert f'scope="{SCOPE}"' in challenge
    assert "error=" not in challenge  # RFC 6750 3.1: no error code when no token was sent


async def test_a_client_signs_in_through_the_sdk_and_calls_tools(auth, server, thread_sandbox):
    """The mcp SDK's OAuth client, from nothing: 401, resource metadata, the issuer's metadata,
    dynamic registration, authorization with PKCE, the token for this resource; then tools."""
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

    class Storage:
        tokens = client_info = None

        async def get_tokens(self):
            return self.tokens

        async def set_tokens(self, tokens):
            self.tokens = tokens

        async def get_client_info(self):
            return self.client_info

        async def set_client_info(self, client_info):
            self.client_info = client_info

    redirected: list[dict] = []

    async def redirect_handler(url: str) -> None:  # the user's browser: signed in, sent back with a code
        async with httpx.AsyncClient() as http:
            answer = await http.get(url, follow_redirects=False)
        assert answer.status_code == 302, answer.text
        redirected.append(parse_qs(urlsplit(answer.headers["location"]).query))

    async def callback_handler() -> AuthorizationCodeResult:
        query = redirected[-1]
        return AuthorizationCodeResult(code=query["code"][0], state=query.get("state", [None])[0])

    auth.user = user()
    storage = Storage()
    provider = OAuthClientProvider(
        server_url=server + "/mcp",
        client_metadata=OAuthClientMetadata(
            client_name="test",
            redirect_uris=["http://127.0.0.1:1/callback"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    async with mcp_client(server + "/mcp", auth=provider) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert "generate_image" in names
        result = await client.call_tool("generate_image", {"prompt": "signed in"})
        assert not result.is_error, result.content[0].text
    assert auth.provider.resources[-1] == server + "/mcp"  # the token was asked for this server (RFC 8707)
    assert storage.tokens.scope == SCOPE


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
@pytest.mark.parametrize(
    ("kid", "alg"), [("k1", "RS256"), ("e1", "ES256"), ("o1", "EdDSA"), ("o1", "Ed25519")]
)
async def test_tokens_signed_with_each_kind_of_key_are_accepted(auth, server, kid, alg):
    async with mcp_client(server + "/mcp", auth.mint(user(), key=auth.key(kid), alg=alg)) as client:
        assert "generate_image" in [tool.name for tool in (await client.list_tools()).tools]


async def test_scopes_are_read_as_scope_or_scp(auth, server):
    for token in (
        auth.mint(user(), scope=f"openid {SCOPE} other"),
        auth.mint(user(), scope=None, scp=["other", SCOPE]),
    ):
        assert (await initialize(server, token)).status_code == 200


# -- refusals ----------------------------------------------------------------------------------------


def bad_tokens(auth: AuthServer) -> dict[str, tuple[str, str]]:
    """case: (token, the reason the server gives)"""
    from joserfc import jwk

    stranger = jwk.RSAKey.generate_key(2048, parameters={"kid": "intruder"})
    impostor = jwk.RSAKey.generate_key(2048, parameters={"kid": "k1"})  # a published kid, another key
    valid = auth.mint(user())
    header, payload, signature = valid.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    public_pem = auth.rsa.as_pem(private=False)
    now = int(time.time())
    unpublished = "signed by a key the issuer does not publish"
    return {
        "expired": (auth.mint(user(), expires_in=-120), "token expired"),
        "wrong audience": (auth.mint(user(), aud="http://127.0.0.1:1/mcp"), "(aud)"),
        "audience of others only": (auth.mint(user(), aud=["http://127.0.0.1:1/mcp", "urn:x"]), "(aud)"),
        "wrong issuer": (auth.mint(user(), iss="http://127.0.0.1:1"), "wrong issuer"),
        "not valid yet": (auth.mint(user(), nbf=now + 600), "not valid yet"),
        "issued in the future": (auth.mint(user(), iat=now + 600), "not valid yet"),
        "no subject": (auth.mint(None), "missing claim sub"),
        "no expiry": (auth.mint(user(), exp=None), "missing claim exp"),
        "unknown key": (auth.mint(user(), key=stranger), unpublished),
        "published kid, other key": (auth.mint(user(), key=impostor), "bad signature"),
        "tampered": (
            ".".join([header, b64(json.dumps({**claims, "sub": "admin"}).encode()), signature]),
            "bad signature",
        ),
        "alg none": (
            auth.forged({"alg": "none", "kid": "k1"}, auth.claims(user()), lambda data: b""),
            "algorithm not accepted",
        ),
        "alg none, no kid": (
            auth.forged({"alg": "none"}, auth.claims(user()), lambda data: b""),
            "algorithm not accepted",
        ),
        "HS256 keyed with the public key": (
            auth.forged(
                {"alg": "HS256", "kid": "k1"},
                auth.claims(user()),
                lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
            ),
            "algorithm not accepted",
        ),
        "an RSA key's kid with ES256": (
            auth.forged({"alg": "ES256", "kid": "k1"}, auth.claims(user()), lambda data: b"\0" * 64),
            unpublished,
        ),
        "not a JWT": ("not-a-jwt", "not a signed JWT"),
        "encrypted (JWE)": ("eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", "not a signed JWT"),
    }


async def test_bad_tokens_are_refused_with_invalid_token(auth, server):
    metadata = f'resource_metadata="{server}/.well-known/oauth-protected-resource/mcp"'
    for case, (token, reason) in bad_tokens(auth).items():
        answer = await initialize(server, token)
        assert answer.status_code == 401, case
        challenge = answer.headers["www-authenticate"]
        assert challenge.startswith('Bearer error="invalid_token"') and metadata in challenge, (
            case,
            challenge,
        )
        assert reason in challenge, (case, challenge)
        assert "mcp-session-id" not in answer.headers, case
    assert (await initialize(server, auth.mint(user()))).status_code == 200  # and the server still serves


async def test_a_token_without_the_scope_is_forbidden(auth, server):
    for scope in ("other", None, "", f"{SCOPE},other"):  # a claim's scopes are space-separated
        answer = await initialize(server, auth.mint(user(), scope=scope))
        assert answer.status_code == 403, scope
        challenge = answer.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge and f'scope="{SCOPE}"' in challenge, challenge
        assert "resource_metadata=" in challenge


async def test_the_static_token_still_works_beside_oauth(server):
    assert (await initialize(server, STATIC_TOKEN)).status_code == 200
    assert (await initialize(server, STATIC_TOKEN[:-1])).status_code == 401


# -- keys: cached, rotated, never fetched on demand of a stranger -----------------------------------


async def test_keys_are_cached_and_rotated(thread_sandbox):
    with AuthServer().running() as auth, fal_mcp_server(auth, thread_sandbox) as base:
        first = auth.mint(user())
        statuses = []

        async def one() -> None:
            statuses.append((await initialize(base, first)).status_code)

        async with anyio.create_task_group() as group:  # concurrent first requests: one fetch
            for _ in range(6):
                group.start_soon(one)
        assert statuses == [200] * 6
        assert auth.jwks_fetches == 1
        assert (await initialize(base, auth.mint(user()))).status_code == 200
        assert auth.jwks_fetches == 1  # cached

        auth.rotate()  # k2 replaces k1 and the rest
        assert (await initialize(base, auth.mint(user()))).status_code == 200  # unknown kid k2: fetched
        assert auth.jwks_fetches == 2
        assert (await initialize(base, first)).status_code == 401  # k1 is gone

        # Made-up key ids cannot make the server hammer the issuer: at most one fetch per interval.
        from joserfc import jwk

        before = auth.jwks_fetches
        stranger = jwk.RSAKey.generate_key(2048).as_dict(private=True)
        for _ in range(20):
            made_up = jwk.import_key({**stranger, "kid": secrets.token_hex(8)})
            assert (await initialize(base, auth.mint(user(), key=made_up))).status_code == 401
        assert auth.jwks_fetches - before <= 1
        assert (await initialize(base, auth.mint(user()))).status_code == 200


async def test_an_unreachable_issuer_refuses_tokens_without_hammering(monkeypatch):
    from fal_mcp import oauth

    fetched = []
    real_get_json = oauth._get_json

    async def counted(url):
        fetched.append(url)
        return await real_get_json(url)

    monkeypatch.setattr(oauth, "_get_json", counted)
    issuer = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    verifier = oauth.JwtVerifier(issuer, "http://127.0.0.1:1/mcp")
    token = AuthServer().mint("someone")
    for _ in range(3):
        with pytest.raises(oauth.TokenRefused, match="keys could not be fetched"):
            await verifier.check(token)
        assert await verifier.verify_token(token) is None
    assert fetched == oauth.metadata_urls(issuer)  # one discovery attempt, then none for a while


# -- principals: each user's own ---------------------------------------------------------------------


async def make_job_and_output(client) -> tuple[str, str]:
    made = await client.call_tool("generate_image", {"prompt": "mine alone"})
    assert not made.is_error, made.content[0].text
    job = await client.call_tool(
        "submit_job", {"tool": "generate_music", "arguments": {"prompt": "mine", "duration_seconds": 10}}
    )
    assert not job.is_error, job.content[0].text
    return f"fal-mcp://outputs/{made.structured_content['request_id']}/0", job.structured_content["job_id"]


async def assert_sees_nothing_of(client, uri: str, job_id: str, sandbox) -> None:
    from mcp.shared.exceptions import MCPError

    assert listed_outputs(await client.list_resources()) == []
    with pytest.raises(MCPError):
        await client.read_resource(uri)
    assert (await client.call_tool("list_jobs", {})).structured_content["jobs"] == []
    cancels = len(sandbox.state.cancels)
    for tool in ("check_job", "cancel_job"):
        result = await client.call_tool(tool, {"job_id": job_id})
        assert result.is_error and "no such job" in result.content[0].text, result.content[0].text
    assert len(sandbox.state.cancels) == cancels


@pytest.mark.parametrize("transport", ["http", "http, stateless", "sse"])
async def test_two_users_are_strangers(auth, server, thread_sandbox, transport):
    """Alice's outputs and jobs are hers: Bob (and the static token's holder) see none of them; Alice
    finds them again on a new connection with a new token, her subject being the same."""
    from mcp import Client
    from mcp.client.sse import sse_client

    def connect(token):
        if transport == "sse":
            return Client(
                sse_client(base + "/sse", headers={"Authorization": f"Bearer {token}"}), mode="legacy"
            )
        return mcp_client(base + "/mcp", token)

    with ExitStack() as stack:
        base = server
        if transport != "http":
            base = stack.enter_context(
                fal_mcp_server(
                    auth,
                    thread_sandbox,
                    stateless=transport == "http, stateless",
                    static_token=STATIC_TOKEN,
                    transport=transport.split(",")[0],
                )
            )
        alice, bob = user(), user()
        async with connect(auth.mint(alice)) as as_alice:
            uri, job_id = await make_job_and_output(as_alice)
        for stranger in (auth.mint(bob), STATIC_TOKEN):
            async with connect(stranger) as as_stranger:
                await assert_sees_nothing_of(as_stranger, uri, job_id, thread_sandbox)
        async with connect(auth.mint(alice, key=auth.key("e1"))) as again:
            assert uri in [str(r.uri) for r in listed_outputs(await again.list_resources())]
            jobs = (await again.call_tool("list_jobs", {})).structured_content["jobs"]
            assert job_id in [job["job_id"] for job in jobs]
            mine = await again.call_tool("check_job", {"job_id": job_id})
            assert not mine.is_error, mine.content[0].text


async def test_a_session_answers_only_the_user_who_opened_it(auth, server):
    alice = auth.mint(user())
    opened = await initialize(server, alice)
    session = opened.headers["mcp-session-id"]
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    async with httpx.AsyncClient(timeout=30) as http:
        for stranger in (auth.mint(user()), STATIC_TOKEN):
            headers = {**MCP_HEADERS, "Authorization": f"Bearer {stranger}", "Mcp-Session-Id": session}
            assert (await http.post(server + "/mcp", json=ping, headers=headers)).status_code == 404
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {alice}", "Mcp-Session-Id": session}
        assert (await http.post(server + "/mcp", json=ping, headers=headers)).status_code == 200


async def test_a_stateless_cancel_reaches_only_the_users_own_call(auth, thread_sandbox):
    thread_sandbox.state.reset()
    thread_sandbox.state.add_fault(outcome="never_finish")

    def headers(token):
        return {**MCP_HEADERS, "Authorization": f"Bearer {token}", "Mcp-Protocol-Version": "2025-11-25"}

    call = {
        "jsonrpc": "2.0",
        "id": 41,
        "method": "tools/call",
        "params": {"name": "generate_image", "arguments": {"prompt": "x"}, "_meta": {"progressToken": 1}},
    }
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 41}}
    # progress every 0.2 s while the call waits: a call still running is seen to be
    with fal_mcp_server(auth, thread_sandbox, stateless=True, FAL_MCP_HEARTBEAT="0.2") as base:
        alice, bob = auth.mint(user()), auth.mint(user())
        async with httpx.AsyncClient(timeout=60) as http:
            async with http.stream("POST", base + "/mcp", headers=headers(alice), json=call) as response:
                assert response.status_code == 200
                progress_after_bob = None
                with anyio.fail_after(60):  # a hang guard
                    async for line in response.aiter_lines():
                        if "Running" in line and progress_after_bob is None:
                            # Bob names Alice's request id: nothing is cancelled
                            answer = await http.post(base + "/mcp", headers=headers(bob), json=cancel)
                            assert answer.status_code == 202
                            progress_after_bob = 0
                        elif progress_after_bob is not None and "notifications/progress" in line:
                            progress_after_bob += 1
                            if progress_after_bob == 3:  # Alice's call runs on
                                break
                assert thread_sandbox.state.cancels == []
                answer = await http.post(base + "/mcp", headers=headers(alice), json=cancel)
                assert answer.status_code == 202
            with anyio.fail_after(30):
                while not thread_sandbox.state.cancels:
                    await anyio.sleep(0.05)
    assert thread_sandbox.state.cancels == [thread_sandbox.state.submissions[-1]["request_id"]]


# -- settings ----------------------------------------------------------------------------------------


def test_oauth_settings():
    env = {
        "FAL_MCP_OAUTH_ISSUER": "https://auth.example.com",
        "FAL_MCP_OAUTH_AUDIENCE": "https://mcp.example.com/mcp",
        "FAL_MCP_OAUTH_SCOPES": "fal:use, fal:spend openid",
    }
    settings = HttpSettings.from_env(env, host="0.0.0.0")
    assert settings.oauth_scopes == ("fal:use", "fal:spend", "openid")
    settings.check_exposure()  # OAuth alone may serve beyond loopback
    with pytest.raises(ConfigError):
        HttpSettings.from_env({}, host="0.0.0.0").check_exposure()
    assert settings.metadata_paths() == (
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    )
    local = {
        "FAL_MCP_OAUTH_ISSUER": "http://127.0.0.1:9000",
        "FAL_MCP_OAUTH_AUDIENCE": "http://localhost:8080/mcp",
    }
    assert HttpSettings.from_env(local).oauth_issuer == "http://127.0.0.1:9000"
    for wrong in (
        {"FAL_MCP_OAUTH_ISSUER": "https://auth.example.com"},  # no audience
        {"FAL_MCP_OAUTH_AUDIENCE": "https://mcp.example.com/mcp"},  # no issuer
        {**env, "FAL_MCP_OAUTH_ISSUER": "http://auth.example.com"},  # plain http beyond loopback
        {**env, "FAL_MCP_OAUTH_ISSUER": "https://auth.example.com/?tenant=1"},
        {**env, "FAL_MCP_OAUTH_ISSUER": "auth.example.com"},
        {**env, "FAL_MCP_OAUTH_AUDIENCE": "ftp://mcp.example.com/"},
        {**env, "FAL_MCP_OAUTH_ISSUER": "https://user:secret@auth.example.com"},
        {**env, "FAL_MCP_OAUTH_SCOPES": 'fal"use'},
    ):
        with pytest.raises(ConfigError):
            HttpSettings.from_env(wrong)


def test_discovery_urls_and_scope_parsing():
    assert metadata_urls("https://as.example") == [
        "https://as.example/.well-known/oauth-authorization-server",
        "https://as.example/.well-known/openid-configuration",
    ]
    assert metadata_urls("https://as.example/tenant/") == [
        "https://as.example/.well-known/oauth-authorization-server/tenant",
        "https://as.example/.well-known/openid-configuration/tenant",
        "https://as.example/tenant/.well-known/openid-configuration",
    ]
    assert parse_scopes("a b,c  a") == ("a", "b", "c")
    assert parse_scopes("a b,c", commas=False) == ("a", "b,c")
    assert parse_scopes(["a", 3, "b"]) == ("a", "b")
    assert parse_scopes(None) == ()


def test_the_principal_is_the_subject_of_its_issuer():
    from fal_mcp.owners import oauth_principal

    alice = oauth_principal("https://as.example", "alice")
    assert alice.key.startswith("oauth:") and "alice" not in alice.key and alice.subject == "alice"
    assert alice == oauth_principal("https://as.example", "alice")
    assert alice.key != oauth_principal("https://other.example", "alice").key
    assert alice.key != oauth_principal("https://as.example", "alice2").key
