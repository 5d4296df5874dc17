"""Forward a verified request with its body to the upstream (the service's forward mode).

nginx's ``auth_request`` never shows the verifier the body, so a request with a body cannot be
checked against its ``Content-Digest`` there (docs/decisions/0041). Routes that take a body are
proxied *through* the verifier service instead: it reads the (bounded) body, verifies the whole
request with the same core, and only then sends it on, here, with the identity headers it
verified. One HTTP/1.1 request per call, bounded in time and in the size of the answer.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

# RFC 9110 7.6.1 hop-by-hop fields, and the framing the forwarder sets itself
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


class UpstreamError(Exception):
    """The upstream could not be reached, did not answer in time, or answered too much."""


@dataclass(frozen=True)
class Upstream:
    """Where forwarded requests go: ``http://host:port`` (no path), with bounds."""

    host: str
    port: int
    timeout: float = 10.0
    max_response: int = 8 * 1024 * 1024

    @classmethod
    def from_url(cls, url: str, timeout: float = 10.0) -> Upstream:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"--forward-to must be http://host:port, not {url!r}")
        return cls(parts.hostname, parts.port or 80, timeout)


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


def forward(
    upstream: Upstream,
    method: str,
    uri: str,
    headers: Mapping[str, str],
    body: bytes,
    drop: Iterable[str] = (),
) -> Answer:
    """Send ``method uri`` with ``headers`` (lower-case names; hop-by-hop fields and ``drop``
    are left out) and ``body`` to ``upstream``; its answer, without hop-by-hop fields."""
    skip = HOP_BY_HOP | {d.lower() for d in drop}
    conn = http.client.HTTPConnection(upstream.host, upstream.port, timeout=upstream.timeout)
    try:
        conn.putrequest(method, uri, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            if name not in skip:
                conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read(upstream.max_response + 1)
        if len(data) > upstream.max_response:
            raise UpstreamError(f"the upstream answered more than {upstream.max_response} bytes")
        kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        return Answer(resp.status, resp.reason, kept, data)
    except (OSError, http.client.HTTPException) as exc:
        raise UpstreamError(f"the upstream did not answer: {type(exc).__name__}") from None
    finally:
        conn.close()
