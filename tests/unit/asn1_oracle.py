"""The asn1crypto schema of the agent extensions and of PKCS#10: a test oracle only.

The product decodes with :mod:`wire` (no asn1crypto); these independent definitions let the
tests check that ``wire`` agrees with a general-purpose ASN.1 library on valid inputs and build
requests that ``wire`` itself would never write.
"""

from __future__ import annotations

from typing import Any

from asn1crypto import algos, core, keys
from asn1crypto import x509 as asn1_x509

from wire import oids

ALG_BY_OID = {dotted: name for name, (dotted, _) in oids.DIGEST_ALGORITHMS.items()}


class AlgorithmIdentifier(core.Sequence):  # type: ignore[misc]
    _fields = [("algorithm", core.ObjectIdentifier), ("parameters", core.Any, {"optional": True})]


class DigestInfo(core.Sequence):  # type: ignore[misc]
    _fields = [("algorithm", AlgorithmIdentifier), ("digest", core.OctetString)]


class AgentProvenance(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("version", core.Integer, {"default": 0}),
        ("model_type", core.UTF8String),
        ("model_digest", DigestInfo),
        ("system_prompt_digest", DigestInfo),
        ("config_digest", DigestInfo, {"implicit": 0, "optional": True}),
    ]


class Scopes(core.SequenceOf):  # type: ignore[misc]
    _child_spec = core.UTF8String


class AgentAuthorization(core.Sequence):  # type: ignore[misc]
    _fields = [("version", core.Integer, {"default": 0}), ("scopes", Scopes)]


class AgentAccountability(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("version", core.Integer, {"default": 0}),
        ("officer_of_record", core.IA5String),
        ("environment", core.UTF8String),
        ("organization", core.UTF8String, {"implicit": 0, "optional": True}),
    ]


class AttributeValues(core.SetOf):  # type: ignore[misc]
    _child_spec = core.Any


class Attribute(core.Sequence):  # type: ignore[misc]
    _fields = [("type", core.ObjectIdentifier), ("values", AttributeValues)]


class Attributes(core.SetOf):  # type: ignore[misc]
    _child_spec = Attribute


class CertificationRequestInfo(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("version", core.Integer),
        ("subject", asn1_x509.Name),
        ("subject_pk_info", keys.PublicKeyInfo),
        ("attributes", Attributes, {"implicit": 0}),
    ]


class CertificationRequest(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("certification_request_info", CertificationRequestInfo),
        ("signature_algorithm", algos.SignedDigestAlgorithm),
        ("signature", core.OctetBitString),
    ]


def _digest(info: Any) -> tuple[str, bytes]:
    return ALG_BY_OID[info["algorithm"]["algorithm"].dotted], info["digest"].native


def provenance(der: bytes) -> tuple[str, tuple[str, bytes], tuple[str, bytes], Any]:
    """``(model type, model digest, prompt digest, config digest or None)`` per asn1crypto."""
    p = AgentProvenance.load(der, strict=True)
    config = p["config_digest"]
    return (
        p["model_type"].native,
        _digest(p["model_digest"]),
        _digest(p["system_prompt_digest"]),
        None if isinstance(config, core.Void) else _digest(config),
    )


def authorization(der: bytes) -> tuple[str, ...]:
    """The scopes per asn1crypto."""
    return tuple(AgentAuthorization.load(der, strict=True)["scopes"].native)


def accountability(der: bytes) -> tuple[str, str, str | None]:
    """``(officer, environment, organization)`` per asn1crypto."""
    a = AgentAccountability.load(der, strict=True)
    org = a["organization"]
    return (
        a["officer_of_record"].native,
        a["environment"].native,
        None if isinstance(org, core.Void) else org.native,
    )
