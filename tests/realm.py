"""A Keycloak realm on loopback for the tests that switch MONAI Label's authentication on: it hands out
its RSA public key as Keycloak's realm endpoint does, and tokens are signed with its key for any user
name and roles."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# MONAI Label's default role names (monailabel/config.py: MONAI_LABEL_AUTH_ROLE_USER, ..._ANNOTATOR, ...)
USER, ANNOTATOR, REVIEWER, ADMIN = "monailabel-user", "monailabel-annotator", "monailabel-reviewer", "monailabel-admin"


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@contextlib.contextmanager
def running_realm(key):
    """``GET /realms/test`` answers ``{"realm": ..., "public_key": base64 DER}``, the field
    monailabel/endpoints/user/auth.py (get_public_key) reads and wraps as a PEM public key."""
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    body = json.dumps({"realm": "test", "public_key": base64.b64encode(public).decode()}).encode()

    class Realm(BaseHTTPRequestHandler):
        def do_GET(self):  # the name http.server calls
            self.send_response(200 if self.path == "/realms/test" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if self.path == "/realms/test" else b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Realm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/realms/test"
    finally:
        server.shutdown()
        server.server_close()


def token(key, roles, *, lifetime: float = 600, algorithm: str = "RS256", user: str = "annotator1") -> str:
    """A token for ``user`` (the claim MONAI Label reads as the user name: preferred_username,
    MONAI_LABEL_AUTH_TOKEN_USERNAME in monailabel/config.py) with ``roles``."""
    claims = {"preferred_username": user, "email": f"{user}@example.org", "name": user,
              "realm_access": {"roles": roles}, "exp": int(time.time() + lifetime)}
    return jwt.encode(claims, key, algorithm=algorithm)


def hmac_token(claims: dict, secret: bytes) -> str:
    """A token signed HS256 with ``secret``: the key-confusion forgery, made by hand (PyJWT refuses a
    public key as an HMAC secret)."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signed = f"{part(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{part(json.dumps(claims).encode())}"
    return f"{signed}.{part(hmac.new(secret, signed.encode(), hashlib.sha256).digest())}"


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}
