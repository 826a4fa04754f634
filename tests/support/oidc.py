"""A relying party that is not built on the provider's library: oauthlib (the library under
requests-oauthlib) prepares the requests and reads the answers; PyJWT verifies ID tokens from the JWKS alone,
as an application would."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from oauthlib.oauth2 import WebApplicationClient

from tests.support.server import Target
from twostep.services import oidc_clients

# The test servers are http://localhost (a loopback origin, which twostep allows); oauthlib wants https.
os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")

REDIRECT_URI = "https://rp.example/callback"
SCOPE = ["openid", "profile", "email", "groups"]


def register(server: Any, name: str = "Test app", **kwargs: Any) -> oidc_clients.NewClient:
    """A client registered in the in-process app (as `twostep client add` does)."""
    kwargs.setdefault("redirect_uris", [REDIRECT_URI])
    return oidc_clients.add(server.app.state.web.ctx, name=name, **kwargs)


@dataclass
class RelyingParty:
    server: Target
    client_id: str
    secret: str | None
    redirect_uri: str = REDIRECT_URI
    # TWOSTEP_ORIGIN when the server is reached at another address (two servers behind one origin).
    issuer: str | None = None
    oauth: WebApplicationClient = field(init=False)
    state: str = ""
    nonce: str = ""
    verifier: str = ""

    def __post_init__(self) -> None:
        self.oauth = WebApplicationClient(self.client_id)

    def authorize_url(self, *, pkce: bool = True, scope: list[str] | None = None, **extra: str) -> str:
        self.state = secrets.token_urlsafe(12)
        self.nonce = secrets.token_urlsafe(12)
        params: dict[str, Any] = {"nonce": self.nonce, **extra}
        if pkce:
            self.verifier = self.oauth.create_code_verifier(64)
            params["code_challenge"] = self.oauth.create_code_challenge(self.verifier, "S256")
            params["code_challenge_method"] = "S256"
        url: str = self.oauth.prepare_request_uri(
            f"{self.server.url}/oidc/authorize",
            redirect_uri=self.redirect_uri,
            scope=scope or SCOPE,
            state=self.state,
            **params,
        )
        return url

    def code_from(self, location: str) -> str:
        """The code of the redirect back, after checking its state (oauthlib raises on an error)."""
        assert location.startswith(self.redirect_uri + "?"), location
        result = self.oauth.parse_request_uri_response(location, state=self.state)
        return str(result["code"])

    def token_request(
        self, code: str, *, verifier: str | None = None, secret: str | None = None
    ) -> httpx.Response:
        body = self.oauth.prepare_request_body(
            code=code,
            redirect_uri=self.redirect_uri,
            code_verifier=self.verifier if verifier is None else verifier,
            include_client_id=self.secret is None,
        )
        headers = {"content-type": "application/x-www-form-urlencoded"}
        with self.server.client() as http:
            if self.secret is None:
                return http.post("/oidc/token", content=body, headers=headers)
            auth = (self.client_id, self.secret if secret is None else secret)
            return http.post("/oidc/token", content=body, headers=headers, auth=auth)

    def tokens(self, code: str) -> dict[str, Any]:
        r = self.token_request(code)
        assert r.status_code == 200, r.text
        token: dict[str, Any] = dict(self.oauth.parse_request_body_response(r.text))
        return token

    def refresh(self, refresh_token: str) -> httpx.Response:
        body = self.oauth.prepare_refresh_body(
            refresh_token=refresh_token, include_client_id=self.secret is None
        )
        headers = {"content-type": "application/x-www-form-urlencoded"}
        with self.server.client() as http:
            if self.secret is None:
                return http.post("/oidc/token", content=body, headers=headers)
            return http.post("/oidc/token", content=body, headers=headers, auth=(self.client_id, self.secret))

    def verify_id_token(self, id_token: str, jwks_from: Target | None = None) -> dict[str, Any]:
        """Verify signature, issuer, audience and expiry with the JWKS alone (PyJWT), and the nonce."""
        with (jwks_from or self.server).client() as http:
            keys = jwt.PyJWKSet.from_dict(http.get("/oidc/jwks").json())
        kid = jwt.get_unverified_header(id_token)["kid"]
        key = next(k for k in keys.keys if k.key_id == kid)
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key,
            algorithms=["RS256", "ES256"],
            audience=self.client_id,
            issuer=self.issuer or self.server.url,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            leeway=10**9,  # the test clock may be far from the real time; expiry is checked on its own
        )
        assert claims["nonce"] == self.nonce
        return claims

    def userinfo(self, access_token: str, method: str = "GET") -> httpx.Response:
        with self.server.client() as http:
            return http.request(method, "/oidc/userinfo", headers={"authorization": f"Bearer {access_token}"})


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
