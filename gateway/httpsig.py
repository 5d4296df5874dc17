"""RFC 9421 verification: parse ``Signature-Input``/``Signature``, rebuild the signature base
from the received request, verify with the certificate key. RFC 9530 Content-Digest.

The one RFC 9421 core of the gateway: both profiles (:mod:`gateway.profiles`) use it, and it
reproduces the RFC 9421 appendix B.2 signature bases byte for byte
(``tests/unit/test_rfc9421_vectors.py``). Algorithms: ``ecdsa-p256-sha256``,
``ecdsa-p384-sha384``, ``ed25519``, ``rsa-v1_5-sha256``, ``rsa-pss-sha512``; no HMAC (a
gateway has no shared secrets with agents)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qsl, quote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gateway.problems import Check, Denied
from wire import sf

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
_SHA256 = hashes.SHA256()
_SHA384 = hashes.SHA384()
_ECDSA256 = ec.ECDSA(_SHA256)
_ECDSA384 = ec.ECDSA(_SHA384)
_PKCS1 = padding.PKCS1v15()
_PSS512 = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)


@dataclass(frozen=True)
class RequestView:
    """The parts of an HTTP request that signatures cover (header names lower-case)."""

    method: str
    path: str  # as sent, percent-encoded, without the query
    query: str  # without the leading "?"
    headers: Mapping[str, str]
    body: bytes = b""
    authority: str = ""
    scheme: str = "http"
    status: int | None = None  # a response's status code (``@status``), for test vectors


@dataclass(frozen=True)
class ParsedSignature:
    """One signature of the request: covered component ids, parameters, value."""

    label: str
    covered: tuple[str, ...]
    params: dict[str, sf.Bare]
    params_value: str
    signature: bytes


# Fast path: one member in exactly the canonical RFC 8941 form (no escapes, no booleans, no
# non-canonical integers), so the received text *is* its own serialisation. Anything else goes
# through the general parser, which gives the same result for these inputs.
_KEY = r"[a-z*][a-z0-9_\-.*]*"
_STR = r'"[ !#-\[\]-~]*"'
_INT = r"(?:0|-?[1-9][0-9]{0,14})"
_FAST_INPUT = re.compile(
    rf"({_KEY})=(\(((?:{_STR}(?: {_STR})*)?)\)((?:;{_KEY}=(?:{_INT}|{_STR}))*))"
)
_FAST_PARAM = re.compile(rf";({_KEY})=({_INT}|{_STR})")
_FAST_SIG = re.compile(rf"({_KEY})=:([A-Za-z0-9+/]*={{0,2}}):")


def _fast(raw_input: str, raw_sig: str, tag: str) -> ParsedSignature | None:
    m = _FAST_INPUT.fullmatch(raw_input)
    sm = _FAST_SIG.fullmatch(raw_sig)
    if m is None or sm is None or sm.group(1) != m.group(1):
        return None
    params: dict[str, sf.Bare] = {}
    for key, value in _FAST_PARAM.findall(m.group(4)):
        if key in params:
            return None
        params[key] = value[1:-1] if value[0] == '"' else int(value)
    if params.get("tag") != tag:
        return None
    inner, items = m.group(2), m.group(3)
    # the items matched _STR, which holds no '"' (but may hold ")"): splitting on '" "' is exact
    covered = tuple(items[1:-1].split('" "')) if items else ()
    if len(set(covered)) != len(covered):
        return None
    try:
        signature = base64.b64decode(sm.group(2), validate=True)
    except ValueError:
        return None
    return ParsedSignature(m.group(1), covered, params, inner, signature)


def parse_signature(headers: Mapping[str, str], tag: str) -> ParsedSignature:
    """The single signature whose ``tag`` parameter is ``tag``."""
    raw_input = headers.get("signature-input")
    raw_sig = headers.get("signature")
    if not raw_input or not raw_sig:
        raise Denied(Check.CREDENTIALS_MISSING, "Signature and Signature-Input are required")
    fast = _fast(raw_input, raw_sig, tag)
    if fast is not None:
        return fast
    try:
        inputs = sf.parse_dictionary(raw_input)
        sigs = sf.parse_dictionary(raw_sig)
    except sf.SFError as exc:
        raise Denied(Check.MALFORMED, f"Signature/Signature-Input: {exc}") from None
    found = [
        (label, member)
        for label, member in inputs.items()
        if isinstance(member, sf.InnerList) and dict(member.params).get("tag") == tag
    ]
    if len(found) != 1:
        raise Denied(
            Check.MALFORMED if found else Check.CREDENTIALS_MISSING,
            f"expected exactly one signature with tag={tag!r}, found {len(found)}",
        )
    return _member(found[0][0], found[0][1], sigs)


def parse_labelled(headers: Mapping[str, str], label: str) -> ParsedSignature:
    """The signature under ``label`` (RFC 9421 section 4; whatever its tag)."""
    try:
        inputs = sf.parse_dictionary(headers.get("signature-input", ""))
        sigs = sf.parse_dictionary(headers.get("signature", ""))
    except sf.SFError as exc:
        raise Denied(Check.MALFORMED, f"Signature/Signature-Input: {exc}") from None
    member = inputs.get(label)
    if not isinstance(member, sf.InnerList):
        raise Denied(Check.CREDENTIALS_MISSING, f"no signature labelled {label!r}")
    return _member(label, member, sigs)


def _member(label: str, inner: sf.Member, sigs: dict[str, sf.Member]) -> ParsedSignature:
    assert isinstance(inner, sf.InnerList)
    value = sigs.get(label)
    if not isinstance(value, sf.Item) or not isinstance(value.value, bytes):
        raise Denied(Check.MALFORMED, f"no Signature value for label {label!r}")
    covered = []
    for item in inner.items:
        if not isinstance(item.value, str):
            raise Denied(Check.MALFORMED, "covered components must be strings")
        if not item.params:
            covered.append(item.value)
        elif (
            item.value == "@query-param"
            and len(item.params) == 1
            and (item.params[0][0] == "name" and isinstance(item.params[0][1], str))
        ):  # RFC 9421 2.2.8, kept as its serialised identifier
            covered.append(item.value + sf.serialize_params(item.params))
        else:
            raise Denied(Check.MALFORMED, "only @query-param may carry a parameter (name)")
    if len(set(covered)) != len(covered):
        raise Denied(Check.MALFORMED, "a component is covered twice")
    return ParsedSignature(
        label,
        tuple(covered),
        dict(inner.params),
        sf.serialize_inner_list(inner),
        value.value,
    )


def component_value(name: str, req: RequestView) -> str:
    """The value of a covered component in the received request."""
    if name and name[0] != "@":  # a header field (the common case first)
        value = req.headers.get(name)
        if value is None or name != name.lower():
            raise Denied(Check.SIGNATURE, f"covered header {name!r} is absent")
        return value.strip()
    if name == "@method":
        return req.method.upper()
    if name == "@path":
        return req.path or "/"
    if name == "@query":
        return "?" + req.query
    if name == "@authority":
        return normal_authority(req.scheme, req.authority)
    if name == "@scheme":
        return req.scheme.lower()
    if name == "@request-target":
        return (req.path or "/") + ("?" + req.query if req.query else "")
    if name.startswith("@query-param;name="):
        return query_param(sf.parse_item(name[len("@query-param;name=") :]).value, req.query)
    if name == "@status" and req.status is not None:
        return str(req.status)
    if name == "@target-uri":
        target = (req.path or "/") + ("?" + req.query if req.query else "")
        return f"{req.scheme.lower()}://{normal_authority(req.scheme, req.authority)}{target}"
    raise Denied(Check.SIGNATURE, f"unsupported component {name!r}")


_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def normal_authority(scheme: str, authority: str) -> str:
    """RFC 9421 2.2.3 / RFC 9110 4.2.3: lower-case host, the scheme's default port left out."""
    host = authority.lower()
    default = _DEFAULT_PORTS.get(scheme.lower())
    if default and host.endswith(default):
        host = host[: -len(default)]
    return host


def normal_audience(value: str) -> str:
    """An audience in the form the agent SDK sends: for an ``http(s)`` URL without path,
    query or fragment, ``scheme://authority`` with the authority normalised; anything else
    (an opaque service name) unchanged."""
    scheme, sep, rest = value.partition("://")
    lowered = scheme.lower()
    if sep and lowered in _DEFAULT_PORTS:
        authority = rest[:-1] if rest.endswith("/") else rest
        if authority and not any(c in authority for c in "/?#@"):
            return f"{lowered}://{normal_authority(lowered, authority)}"
    return value


def query_param(name: object, query: str) -> str:
    """RFC 9421 2.2.8: the one value of query parameter ``name``, re-encoded."""
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == name]
    if len(values) != 1:
        raise Denied(Check.SIGNATURE, f"query parameter {name!r} is absent or repeated")
    return quote(values[0], safe="")


def _identifier(component: str) -> str:
    name, semi, params = component.partition(";")  # only @query-param carries a parameter
    return f'"{name}"{semi}{params}'


def signature_base(sig: ParsedSignature, req: RequestView) -> bytes:
    """The RFC 9421 signature base of ``sig`` over ``req``."""
    lines = [
        f'"{c}": {component_value(c, req)}'
        if ";" not in c
        else f"{_identifier(c)}: {component_value(c, req)}"
        for c in sig.covered
    ]
    lines.append(f'"@signature-params": {sig.params_value}')
    try:
        return "\n".join(lines).encode("ascii")
    except UnicodeEncodeError:
        raise Denied(Check.MALFORMED, "non-ASCII header value in a covered component") from None


def verify(public_key: PublicKey, algorithm: str, signature: bytes, base: bytes) -> bool:
    """True if ``signature`` (RFC 9421 encoding) over ``base`` verifies."""
    try:
        if algorithm == "ecdsa-p256-sha256":
            if len(signature) != 64:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            cast(ec.EllipticCurvePublicKey, public_key).verify(der, base, _ECDSA256)
        elif algorithm == "ecdsa-p384-sha384":
            if len(signature) != 96:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
            )
            cast(ec.EllipticCurvePublicKey, public_key).verify(der, base, _ECDSA384)
        elif algorithm == "ed25519":
            cast(ed25519.Ed25519PublicKey, public_key).verify(signature, base)
        elif algorithm == "rsa-v1_5-sha256":
            cast(rsa.RSAPublicKey, public_key).verify(signature, base, _PKCS1, _SHA256)
        elif algorithm == "rsa-pss-sha512":
            cast(rsa.RSAPublicKey, public_key).verify(signature, base, _PSS512, hashes.SHA512())
        else:
            return False
    except (InvalidSignature, ValueError, TypeError, AttributeError):  # a key of another type
        return False
    return True


def content_digest_ok(header: str, body: bytes) -> bool:
    """True if the ``sha-256`` member of a Content-Digest header matches ``body``."""
    digest = hashlib.sha256(body).digest()
    if header == "sha-256=:" + base64.b64encode(digest).decode() + ":":  # the usual form
        return True
    try:
        members = sf.parse_dictionary(header)
    except sf.SFError as exc:
        raise Denied(Check.MALFORMED, f"Content-Digest: {exc}") from None
    member = members.get("sha-256")
    if not isinstance(member, sf.Item) or not isinstance(member.value, bytes):
        raise Denied(Check.MALFORMED, "Content-Digest needs a sha-256 byte sequence")
    return member.value == digest


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
