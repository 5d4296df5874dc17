"""Strict HTTP/1.1 request-head parsing shared by the OCSP and CA API workers (RFC 9112), pure.

Both servers face untrusted clients, so the parser accepts only what RFC 9112 allows and refuses
the rest with a status instead of guessing: a request line of exactly ``method SP target SP
version``, header lines ending in CRLF (a bare CR or LF is refused, section 2.2), names that
are tokens with no whitespace before the colon (section 5.1), no obs-fold (section 5.2), no
control characters in values, a ``Content-Length`` of digits only (section 6.3: ``+69``,
``6_9`` and lists are refused), and exactly one ``Host`` in HTTP/1.1 (section 3.2). A field
name with ``_`` is dropped, as nginx does, because CGI/WSGI names it like the ``-`` form
(``Content_Length`` would otherwise pose as ``Content-Length``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(rb"[!#$%&'*+\-.^`|~0-9A-Za-z_]+")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS = re.compile(rb"[0-9]{1,15}")
_VERSIONS = frozenset({b"HTTP/1.1", b"HTTP/1.0"})
MAX_CONTENT_LENGTH_DIGITS = 15


@dataclass(frozen=True, slots=True)
class RequestHead:
    """One parsed request head; ``headers`` are WSGI ``HTTP_*`` keys (repeated ones joined)."""

    method: str
    target: str
    version: str
    headers: dict[str, str]
    content_length: int


class HeadError(Exception):
    """The head is not valid HTTP/1.1; ``status`` is what to answer before closing."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def parse_head(block: bytes) -> RequestHead:
    """Parse the request head ``block`` (without its final CRLF CRLF) or raise ``HeadError``."""
    if b"\n" in block.replace(b"\r\n", b"") or b"\r" in block.replace(b"\r\n", b""):
        raise HeadError(400, "bare CR or LF in the request head")
    lines = block.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise HeadError(400, "the request line is not 'method target version'")
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or b"_" in method:
        raise HeadError(400, "the method is not a token")
    if version not in _VERSIONS:
        raise HeadError(505 if version.startswith(b"HTTP/") else 400, "unsupported version")
    if not _TARGET.fullmatch(target):
        raise HeadError(400, "the request target is not an origin-form path")
    headers: dict[str, str] = {}
    lengths: list[bytes] = []
    hosts = 0
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HeadError(400, "obsolete line folding")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HeadError(400, "a header line is not 'name: value'")
        value = value.strip(b" \t")
        if _VALUE_BAD.search(value):
            raise HeadError(400, "control characters in a header value")
        lower = name.lower()
        if b"_" in lower:
            continue
        if lower == b"content-length":
            lengths.append(value)
            continue
        if lower == b"host":
            hosts += 1
        key = "HTTP_" + lower.decode("ascii").upper().replace("-", "_")
        text = value.decode("latin-1")
        headers[key] = headers[key] + "," + text if key in headers else text
    if version == b"HTTP/1.1" and hosts != 1:
        raise HeadError(400, "HTTP/1.1 needs exactly one Host header")
    if "HTTP_TRANSFER_ENCODING" in headers:
        # No chunked request bodies here; with a Content-Length too it is a smuggling attempt.
        raise HeadError(400 if lengths else 411, "Transfer-Encoding is not accepted")
    length = 0
    if lengths:
        if len(set(lengths)) != 1 or not _DIGITS.fullmatch(lengths[0]):
            raise HeadError(400, "Content-Length must be one decimal number")
        length = int(lengths[0])
        headers["HTTP_CONTENT_LENGTH"] = str(length)
    return RequestHead(
        method.decode("ascii"),
        target.decode("ascii"),
        version.decode("ascii"),
        headers,
        length,
    )
