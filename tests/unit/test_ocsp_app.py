"""The OCSP HTTP edge through Flask's test client: URL forms, content types, RFC 5019 headers,
304, error answers never cacheable, never a 500, and a property test over random and mutated
requests (every answer is an OCSPResponse; never "good" for a serial that was not issued)."""

from __future__ import annotations

import base64
import urllib.parse
from pathlib import Path

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography.x509 import ocsp
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca.config import Settings
from ocsp.app import create_app
from ocsp.response import ResponseStatus
from tests.unit.test_ocsp_core import (
    GOOD_SERIAL,
    REVOKED_SERIAL,
    World,
    cert_id,
    make_request,
    make_world,
)

OCSP_REQ = {"Content-Type": "application/ocsp-request"}
MALFORMED = ResponseStatus.MALFORMED_REQUEST


def app_for(world: World) -> Flask:
    responder = world.responder()
    app = create_app(Settings(data_dir=Path("/nonexistent")), world.options, lambda: responder)
    app.testing = False  # exercise the production error handlers
    return app


@pytest.fixture
def world() -> World:
    return make_world()


def status_of(body: bytes) -> ocsp.OCSPResponseStatus:
    return ocsp.load_der_ocsp_response(body).response_status


def get_path(der: bytes, prefix: str = "/ocsp/") -> str:
    return prefix + urllib.parse.quote(base64.b64encode(der).decode(), safe="")


def test_post_at_every_url_form(world: World) -> None:
    client = app_for(world).test_client()
    der = make_request([cert_id(world.issuing, GOOD_SERIAL)])
    for url in ("/ocsp", "/ocsp/", "/"):
        resp = client.post(url, data=der, headers=OCSP_REQ)
        assert resp.status_code == 200 and resp.mimetype == "application/ocsp-response"
        parsed = ocsp.load_der_ocsp_response(resp.data)
        assert parsed.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert resp.headers["X-Agentca-Worker"].isdigit()
        assert "no-store" not in resp.headers.get("Cache-Control", "")


def test_get_has_rfc5019_headers_and_304(world: World) -> None:
    client = app_for(world).test_client()
    der = make_request([cert_id(world.issuing, REVOKED_SERIAL, "sha256")])
    for path in (get_path(der), get_path(der, "/"), "/ocsp/" + base64.b64encode(der).decode()):
        resp = client.get(path)
        assert resp.status_code == 200
        parsed = ocsp.load_der_ocsp_response(resp.data)
        assert parsed.certificate_status is ocsp.OCSPCertStatus.REVOKED
        cache = resp.headers["Cache-Control"]
        assert cache.startswith("max-age=") and "public" in cache and "no-transform" in cache
        assert "must-revalidate" in cache
        max_age = int(cache.split(",")[0].split("=")[1])
        assert 0 < max_age <= 3600
        assert resp.headers["Last-Modified"] and resp.headers["Expires"]
        etag = resp.headers["ETag"]
        again = client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.data == b""
        assert again.headers["ETag"] == etag


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": b"garbage", "headers": OCSP_REQ}, ResponseStatus.MALFORMED_REQUEST),
        ({"data": b"", "headers": OCSP_REQ}, ResponseStatus.MALFORMED_REQUEST),
        ({"data": b"\x30" * 20_000, "headers": OCSP_REQ}, ResponseStatus.MALFORMED_REQUEST),
        (
            {"data": b"x", "headers": {"Content-Type": "text/plain"}},
            ResponseStatus.MALFORMED_REQUEST,
        ),
        ({"data": b"x"}, ResponseStatus.MALFORMED_REQUEST),
    ],
)
def test_bad_posts_get_malformed_request_never_cacheable(
    world: World, kwargs: dict, expected: ResponseStatus
) -> None:
    resp = app_for(world).test_client().post("/ocsp", **kwargs)
    assert resp.status_code == 200 and resp.mimetype == "application/ocsp-response"
    assert status_of(resp.data).value == expected.value
    assert resp.headers["Cache-Control"] == "no-store"


def test_wrong_content_type_even_with_a_valid_body(world: World) -> None:
    der = make_request([cert_id(world.issuing, GOOD_SERIAL)])
    resp = (
        app_for(world)
        .test_client()
        .post("/ocsp", data=der, headers={"Content-Type": "application/octet-stream"})
    )
    assert status_of(resp.data) is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


@pytest.mark.parametrize("path", ["/ocsp/%%%", "/ocsp/not*base64", "/ocsp/", "/ocsp/QUJD"])
def test_bad_get_paths(world: World, path: str) -> None:
    resp = app_for(world).test_client().get(path)
    assert resp.status_code == 200
    assert status_of(resp.data) is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    assert resp.headers["Cache-Control"] == "no-store"


def test_unauthorized_and_try_later_are_not_cacheable(world: World) -> None:
    client = app_for(world).test_client()
    foreign = make_request([cert_id(world.issuing, GOOD_SERIAL, "sha512")])
    resp = client.get(get_path(foreign))
    assert status_of(resp.data) is ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert resp.headers["Cache-Control"] == "no-store" and "ETag" not in resp.headers
    world.source.down = True
    world.clock.t += 5
    resp = client.post("/ocsp", data=make_request([cert_id(world.issuing, 0x77)]), headers=OCSP_REQ)
    assert status_of(resp.data) is ocsp.OCSPResponseStatus.TRY_LATER
    assert resp.headers["Cache-Control"] == "no-store"


def test_health_and_other_urls_are_short_text(world: World) -> None:
    client = app_for(world).test_client()
    health = client.get("/health")
    assert health.status_code == 200 and health.json["status"] == "ok"  # type: ignore[index]
    for method, url in (("put", "/ocsp"), ("post", "/elsewhere"), ("delete", "/")):
        resp = getattr(client, method)(url)
        assert resp.status_code in (404, 405) and resp.mimetype == "text/plain"
        assert b"<" not in resp.data


def test_a_failing_responder_factory_means_try_later() -> None:
    def broken() -> object:
        raise RuntimeError("HSM gone")

    app = create_app(Settings(data_dir=Path("/nonexistent")), None, broken)  # type: ignore[arg-type]
    client = app.test_client()
    resp = client.post("/ocsp", data=b"0", headers=OCSP_REQ)
    assert status_of(resp.data) is ocsp.OCSPResponseStatus.TRY_LATER
    assert client.get("/health").status_code == 503


# ---------------------------------------------------------------------------------- property
_WORLD = make_world()
_APP = app_for(_WORLD)
_ISSUED = {GOOD_SERIAL}


def _valid_requests() -> st.SearchStrategy[bytes]:
    serials = st.one_of(
        st.sampled_from([GOOD_SERIAL, REVOKED_SERIAL]), st.integers(-(2**70), 2**170)
    )
    ids = st.lists(st.tuples(serials, st.sampled_from(["sha1", "sha256"])), min_size=1, max_size=4)
    nonces = st.one_of(st.none(), st.binary(min_size=0, max_size=40))
    return st.builds(
        lambda i, n: make_request([cert_id(_WORLD.issuing, s, a) for s, a in i], n), ids, nonces
    )


def _mutate(data: bytes, index: int, value: int, cut: int) -> bytes:
    if not data:
        return data
    pos = index % len(data)
    mutated = data[:pos] + bytes([value]) + data[pos + 1 :]
    return mutated[: len(mutated) - (cut % 4)]


requests = st.one_of(
    st.binary(max_size=300),
    _valid_requests(),
    st.builds(
        _mutate, _valid_requests(), st.integers(0, 10_000), st.integers(0, 255), st.integers()
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=requests, use_get=st.booleans())
def test_property_every_answer_is_an_ocsp_response_never_good_for_unissued(
    body: bytes, use_get: bool
) -> None:
    client = _APP.test_client()
    if use_get:
        resp = client.get(get_path(body))
    else:
        resp = client.post("/ocsp", data=body, headers=OCSP_REQ)
    assert resp.status_code == 200 and resp.mimetype == "application/ocsp-response"
    parsed = asn1_ocsp.OCSPResponse.load(resp.data)
    if parsed["response_status"].native != "successful":
        assert len(resp.data) == 5
        return
    data = parsed["response_bytes"]["response"].parsed["tbs_response_data"]
    for single in data["responses"]:
        if single["cert_status"].name == "good":
            assert single["cert_id"]["serial_number"].native in _ISSUED
