"""RFC 9421 HTTP Message Signatures (signing side), RFC 9530 Content-Digest, RFC 8941 values.

Only what a signer needs: derived components ``@method``, ``@authority``, ``@scheme``,
``@target-uri``, ``@request-target``, ``@path``, ``@query`` and header fields; signature
parameters as RFC 8941 integers and strings; algorithms ``ecdsa-p256-sha256``,
``ecdsa-p384-sha384`` (raw ``r || s``), ``ed25519`` and ``rsa-v1_5-sha256``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from agent.errors import AgentError
from agent.keys import AgentKey

ParamValue = int | str


def sf_string(value: str) -> str:
    """An RFC 8941 sf-string (printable ASCII; ``\\`` and ``"`` escaped)."""
    if not all(0x20 <= ord(c) <= 0x7E for c in value):
        raise AgentError(f"not an RFC 8941 string: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sf_bytes(value: bytes) -> str:
    """An RFC 8941 byte sequence ``:base64:``."""
    return ":" + base64.b64encode(value).decode("ascii") + ":"


def sf_params(params: Sequence[tuple[str, ParamValue]]) -> str:
    out = []
    for key, value in params:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise AgentError(f"unsupported signature parameter {key}={value!r}")
        out.append(f";{key}={value}" if isinstance(value, int) else f";{key}={sf_string(value)}")
    return "".join(out)


def signature_params(covered: Sequence[str], params: Sequence[tuple[str, ParamValue]]) -> str:
    """The ``@signature-params`` value: ``("a" "b");created=...``."""
    return "(" + " ".join(sf_string(c) for c in covered) + ")" + sf_params(params)


def content_digest(body: bytes) -> str:
    """RFC 9530 ``Content-Digest`` value with SHA-256."""
    return "sha-256=" + sf_bytes(hashlib.sha256(body).digest())


def _authority(scheme: str, netloc: str) -> str:
    host = netloc.rsplit("@", 1)[-1].lower()
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and host.endswith(default):
        host = host[: -len(default)]
    return host


def audience_of(url: str) -> str:
    """The default audience of a request to ``url``: its origin ``scheme://authority``
    (lower case, default port left out), the service the request is meant for."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        raise AgentError(f"cannot derive an audience from {url!r}: pass audience=")
    return f"{scheme}://{_authority(scheme, parts.netloc)}"


def component_value(name: str, method: str, url: str, headers: Mapping[str, str]) -> str:
    """The value of one covered component of a request (RFC 9421 section 2)."""
    parts = urlsplit(url)
    if name == "@method":
        return method.upper()
    if name == "@path":
        return parts.path or "/"
    if name == "@query":
        return "?" + parts.query
    if name == "@authority":  # what the request's Host will say
        host = {k.lower(): v for k, v in headers.items()}.get("host") or parts.netloc
        return _authority(parts.scheme.lower(), host.strip())
    if name == "@scheme":
        return parts.scheme.lower()
    if name == "@target-uri":
        return url
    if name == "@request-target":
        return (parts.path or "/") + ("?" + parts.query if parts.query else "")
    if name.startswith("@"):
        raise AgentError(f"unsupported derived component {name}")
    lowered = {k.lower(): v for k, v in headers.items()}
    if name not in lowered:
        raise AgentError(f"covered header {name!r} is not in the request")
    return lowered[name].strip()


def signature_base(
    method: str,
    url: str,
    headers: Mapping[str, str],
    covered: Sequence[str],
    params_value: str,
) -> bytes:
    """The signature base (RFC 9421 section 2.5) as bytes."""
    lines = [f"{sf_string(c)}: {component_value(c, method, url, headers)}" for c in covered]
    lines.append(f'"@signature-params": {params_value}')
    return "\n".join(lines).encode("ascii")


def algorithm_for(key: AgentKey) -> str:
    """The RFC 9421 algorithm name for ``key``."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        names = {"secp256r1": "ecdsa-p256-sha256", "secp384r1": "ecdsa-p384-sha384"}
        if key.curve.name in names:
            return names[key.curve.name]
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    elif isinstance(key, rsa.RSAPrivateKey):
        return "rsa-v1_5-sha256"
    raise AgentError(f"no RFC 9421 algorithm for {type(key).__name__}")


def sign_base(key: AgentKey, base: bytes) -> bytes:
    """Sign a signature base; ECDSA signatures are raw ``r || s`` as RFC 9421 requires."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name == "secp384r1":
            der, size = key.sign(base, ec.ECDSA(hashes.SHA384())), 48
        else:
            der, size = key.sign(base, ec.ECDSA(hashes.SHA256())), 32
        r, s = decode_dss_signature(der)
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(base)
    return key.sign(base, padding.PKCS1v15(), hashes.SHA256())
