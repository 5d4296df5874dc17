"""Strict RFC 9112 request-head parsing shared by the OCSP and CA API workers (ca.http1)."""

from __future__ import annotations

import pytest

from ca.http1 import HeadError, parse_head

OK = b"POST /ocsp HTTP/1.1\r\nHost: x\r\nContent-Type: application/ocsp-request\r\n"


def test_a_plain_post_parses() -> None:
    head = parse_head(OK + b"Content-Length: 69")
    assert (head.method, head.target, head.version) == ("POST", "/ocsp", "HTTP/1.1")
    assert head.content_length == 69
    assert head.headers["HTTP_CONTENT_TYPE"] == "application/ocsp-request"
    assert head.headers["HTTP_CONTENT_LENGTH"] == "69"


@pytest.mark.parametrize(
    "block",
    [
        OK + b"Content-Length: +69",
        OK + b"Content-Length: 6_9",
        OK + b"Content-Length: -1",
        OK + b"Content-Length: 0x45",
        OK + b"Content-Length: 69, 69",
        OK + b"Content-Length: 69\r\nContent-Length: 70",
        OK + b"Content-Length: 9999999999999999",
        OK + b"Content-Length : 69",  # whitespace before the colon (RFC 9112 5.1)
        OK + b"X-A: 1\r\n folded",  # obs-fold
        OK.replace(b"\r\nHost", b"\nHost"),  # bare LF ends a line
        OK + b"X-A: a\rb",  # bare CR
        OK + b"X-A: a\x00b",
        OK + b"Transfer-Encoding: chunked\r\nContent-Length: 5",
        b"POST /ocsp HTTP/1.1\r\nContent-Length: 0",  # no Host
        OK + b"Host: y",  # two Hosts
        b"POST  /ocsp HTTP/1.1\r\nHost: x",
        b"POST ocsp HTTP/1.1\r\nHost: x",
        b"POST /ocsp HTTP/2.0\r\nHost: x",
        b"POST /ocsp HTTP/1.1 extra\r\nHost: x",
        b"PO(ST /ocsp HTTP/1.1\r\nHost: x",
    ],
)
def test_lenient_forms_are_refused(block: bytes) -> None:
    with pytest.raises(HeadError) as exc:
        parse_head(block)
    assert 400 <= exc.value.status < 600


def test_an_underscore_name_never_poses_as_content_length() -> None:
    head = parse_head(OK + b"Content_Length: 69")
    assert head.content_length == 0
    assert "HTTP_CONTENT_LENGTH" not in head.headers


def test_chunked_alone_is_length_required() -> None:
    with pytest.raises(HeadError) as exc:
        parse_head(OK + b"Transfer-Encoding: chunked")
    assert exc.value.status == 411


def test_http10_needs_no_host_and_repeated_headers_join() -> None:
    head = parse_head(b"GET /ocsp/MA== HTTP/1.0\r\nAccept: a\r\nAccept: b")
    assert head.version == "HTTP/1.0" and head.headers["HTTP_ACCEPT"] == "a,b"
