"""MONAI Label's own authentication, switched on as its settings name it (``MONAI_LABEL_AUTH_ENABLE``,
``MONAI_LABEL_AUTH_REALM_URI``; monailabel/config.py): a realm on loopback hands out its RSA public key
as Keycloak's realm endpoint does, and the server takes a bearer token signed with that realm's key,
with the roles MONAI Label reads (``realm_access.roles``), and refuses everything else with 401, or
403 for a role too low. The app's own routes are guarded like MONAI Label's."""

from __future__ import annotations

import time

import jwt
import pytest
import requests
from app_server import start_server
from cryptography.hazmat.primitives import serialization
from realm import ANNOTATOR, USER, bearer, hmac_token, rsa_key, running_realm, token
from tiny import PHANTOM, tiny_model

import universal
from universal.synth import make_phantom, save_phantom


@pytest.fixture(scope="module")
def realm_key():
    return rsa_key()


@pytest.fixture(scope="module")
def server(realm_key, tmp_path_factory, random_clip_weights):
    """The app with authentication on, a tiny model and one phantom; sends an annotator's token."""
    root = tmp_path_factory.mktemp("auth")
    studies = root / "studies"
    studies.mkdir()
    save_phantom(make_phantom(0, **PHANTOM), studies / "case0.nii.gz")
    (root / "model").mkdir()
    universal.save_model(tiny_model(["Liver", "Spleen"]), root / "model" / "clip_driven_universal_unet.pth")
    with running_realm(realm_key) as realm:
        env = {"UNIVERSAL_OFFLINE": "1", "UNIVERSAL_CACHE_DIR": str(root / "cache"),
               "UNIVERSAL_CLIP_WEIGHTS": str(random_clip_weights),
               "MONAI_LABEL_AUTH_ENABLE": "true", "MONAI_LABEL_AUTH_REALM_URI": realm}
        started = start_server(root, studies, {"model_dir": str(root / "model")}, env,
                               headers=bearer(token(realm_key, [USER, ANNOTATOR])))
        yield started
        started.stop()


def test_without_a_token_nothing_is_answered_but_401(server):
    for method, path in [("GET", "/info/"), ("GET", "/datastore/?output=all"), ("POST", "/infer/universal?image=case0"),
                         ("GET", "/universal/classes"), ("GET", "/universal/versions"),
                         ("POST", "/universal/classes"), ("POST", "/train/universal")]:
        answer = requests.request(method, server.url + path, timeout=60)
        assert answer.status_code == 401, (method, path, answer.status_code, answer.text[:200])


def test_a_token_signed_by_the_realm_opens_the_server(server):
    info = server.get("/info/")
    assert info.status_code == 200 and info.json()["universal"]["ready"], info.text[:300]
    answer = server.post("/infer/universal", params={"image": "case0", "output": "json"})
    assert answer.status_code == 200, answer.text[:300]
    assert server.get("/universal/classes").status_code == 200


def test_tokens_the_realm_did_not_sign_or_that_expired_are_401(server, realm_key):
    other = rsa_key()
    public_pem = realm_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = {
        "another key": token(other, [USER, ANNOTATOR]),
        "expired": token(realm_key, [USER, ANNOTATOR], lifetime=-60),
        "unsigned": jwt.encode({"realm_access": {"roles": [USER]}}, None, algorithm="none"),
        "HMAC with the public key": hmac_token({"realm_access": {"roles": [USER]}, "exp": int(time.time() + 600)},
                                               public_pem),
        "not a token": "not-a-token",
    }
    for kind, value in forged.items():
        answer = requests.get(server.url + "/info/", headers=bearer(value), timeout=60)
        assert answer.status_code == 401, (kind, answer.status_code)


def test_a_role_too_low_is_403(server, realm_key):
    reader = bearer(token(realm_key, [USER]))
    assert requests.get(server.url + "/universal/classes", headers=reader, timeout=60).status_code == 200
    new_class = {"name": "Appendix", "embedding": [0.01] * 512}
    refused = requests.post(server.url + "/universal/classes", json=new_class, headers=reader, timeout=60)
    assert refused.status_code == 403, refused.text
    assert "Appendix" not in server.get("/universal/classes").text
    added = server.post("/universal/classes", json=new_class)  # the annotator's token
    assert added.status_code == 200, added.text
