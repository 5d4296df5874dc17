"""The WSGI request view: a bodiless request has no content type (wsgiref invents one)."""

from __future__ import annotations

from gateway.wsgi import request_view


def _environ(**extra: str) -> dict[str, str]:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": "/book", "HTTP_HOST": "gw", **extra}


def test_an_invented_content_type_on_a_bodiless_request_is_dropped() -> None:
    for length in ("", "0"):
        view = request_view(_environ(CONTENT_TYPE="text/plain", CONTENT_LENGTH=length), b"")
        assert "content-type" not in view.headers


def test_a_request_with_a_body_keeps_its_content_type() -> None:
    env = _environ(REQUEST_METHOD="POST", CONTENT_TYPE="application/json", CONTENT_LENGTH="2")
    view = request_view(env, b"{}")
    assert view.headers["content-type"] == "application/json"
    assert view.headers["content-length"] == "2"
