"""A strict RFC 5280 path validator with revocation fetching (pyhanko-certvalidator, hard-fail)
against a real CA API server (``/crl/...``), a real OCSP responder and the CRL publisher's
output, on PostgreSQL with the CA keys in SoftHSM2 (decision 0023).

The validator follows only what the certificates name: the OCSP URL (agent certificates), the
CRL distribution point and the Freshest CRL (delta) URL. Without a Freshest CRL in the
certificates it refused every agentca chain ("Delta CRL matching Freshest CRL extension not
available"), because the complete CRLs name a delta CRL it would not otherwise fetch.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import crl as asn1_crl
from asn1crypto import pem
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import PathValidationError, RevokedError
from pyhanko_certvalidator.fetchers.api import FetchLimits
from pyhanko_certvalidator.fetchers.requests_fetchers import RequestsFetcherBackend
from pyhanko_certvalidator.path import ValidationPath
from pyhanko_certvalidator.policy_decl import (
    CertRevTrustPolicy,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)

from ca.crl import revoked_serials
from tests.integration import servers
from tests.integration.conftest import REPO_ROOT, run_cli
from tests.integration.test_ocsp_interop import init_ca, issue

pytestmark = pytest.mark.integration

FETCH_TIMEOUT = 5  # seconds per HTTP request the validator makes
VALIDATE_TIMEOUT = 60  # seconds for one whole validation
NO_DELTA = "Delta CRL matching Freshest CRL extension not available"  # pyhanko's words
CRL_ONLY = CertRevTrustPolicy(
    RevocationCheckingPolicy(
        ee_certificate_rule=RevocationCheckingRule.CRL_REQUIRED,
        intermediate_ca_cert_rule=RevocationCheckingRule.CRL_REQUIRED,
    )
)


# ---------------------------------------------------------------------------------- fixture
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[dict[str, Any]]:
    """A CA whose certificates point at a CA API server and an OCSP responder that run."""
    ca_port, ocsp_port = servers.free_port(), servers.free_port()
    data_dir = tmp_path_factory.mktemp("rfc5280-ca")
    work = tmp_path_factory.mktemp("rfc5280-work")
    env = {
        "AGENTCA_DATABASE_URL": pg_module_url,
        "AGENTCA_PUBLIC_BASE_URL": f"http://127.0.0.1:{ca_port}",
        "AGENTCA_OCSP_URL": f"http://127.0.0.1:{ocsp_port}/ocsp",
    }
    init_ca(data_dir, env, work)
    certs = {n: issue(data_dir, env, work, n) for n in ("good", "revoked", "held", "held-crl")}
    pki = {"data_dir": data_dir, "env": env, "work": work, "certs": certs}
    publish(pki, "--full")
    with ExitStack() as stack, pytest.MonkeyPatch.context() as mp:
        for port, args in ((ca_port, ["serve"]), (ocsp_port, ["ocsp", "serve"])):
            mp.setattr(servers, "free_port", lambda port=port: port)
            base, proc = stack.enter_context(
                servers.agentca_server([*args, "--workers", "1"], data_dir, "/health", env)
            )
            pki["ca" if args == ["serve"] else "ocsp"] = (base, proc)
        yield pki


def cli(pki: dict[str, Any], *args: str) -> None:
    result = run_cli(*args, data_dir=pki["data_dir"], env=pki["env"])
    assert result.returncode == 0, result.stderr


def publish(pki: dict[str, Any], mode: str) -> None:
    """One run of the CRL publisher for every issuer (``--full``: complete + delta)."""
    cli(pki, "crl", "publish", mode)


_RELEASE = """
import sys
from ca.config import load_settings
from ca.wiring import open_runtime
rt = open_runtime(load_settings())
rt.authority.release_hold(sys.argv[1], "rfc5280-test")
rt.close()
"""


def release_hold(pki: dict[str, Any], serial: str) -> None:
    """Lift a hold through the CA core: neither the CLI nor the API exposes a release yet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.pop("SOFTHSM2_CONF", None)
    env.update(pki["env"], AGENTCA_DATA_DIR=str(pki["data_dir"]), PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", _RELEASE, serial],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _load(path: Path) -> asn1_x509.Certificate:
    data = path.read_bytes()
    if pem.detect(data):
        _, _, data = pem.unarmor(data)
    return asn1_x509.Certificate.load(data)


def validate(
    pki: dict[str, Any],
    name: str,
    policy: CertRevTrustPolicy | None = None,
    mode: str = "hard-fail",
) -> tuple[ValidationPath, ValidationContext]:
    """Validate agent ``name``'s chain with fetching allowed, hard-fail (or ``policy``)."""
    work: Path = pki["work"]
    context = ValidationContext(
        trust_roots=[_load(work / "root.pem")],
        allow_fetching=True,
        revocation_mode=mode,
        revinfo_policy=policy,
        fetcher_backend=RequestsFetcherBackend(
            per_request_timeout=FETCH_TIMEOUT, limits=FetchLimits(max_requests=20)
        ),
    )
    validator = CertificateValidator(
        _load(pki["certs"][name][0]),
        intermediate_certs=[_load(work / "issuing.pem")],
        validation_context=context,
    )
    check = validator.async_validate_usage({"digital_signature"})
    path = asyncio.run(asyncio.wait_for(check, VALIDATE_TIMEOUT))
    return path, context


def fetched(context: ValidationContext) -> tuple[list[tuple[str, bool]], list[str]]:
    """What the validator fetched: (issuer CN, is delta) per CRL, OCSP cert statuses."""
    crls: list[asn1_crl.CertificateList] = list(context.revinfo_manager.crls)
    seen = sorted(
        (c.issuer.native["common_name"], c.delta_crl_indicator_value is not None) for c in crls
    )
    statuses = [
        r["response_bytes"]["response"]
        .parsed["tbs_response_data"]["responses"][0]["cert_status"]
        .name
        for r in context.revinfo_manager.ocsps
    ]
    return seen, statuses


def _names(pki: dict[str, Any]) -> tuple[str, str]:
    work: Path = pki["work"]
    issuing = x509.load_pem_x509_certificate((work / "issuing.pem").read_bytes())
    root = x509.load_pem_x509_certificate((work / "root.pem").read_bytes())
    cn = x509.oid.NameOID.COMMON_NAME
    return (
        str(issuing.subject.get_attributes_for_oid(cn)[0].value),
        str(root.subject.get_attributes_for_oid(cn)[0].value),
    )


def _crl(pki: dict[str, Any], filename: str) -> bytes:
    return (pki["data_dir"] / "crl" / filename).read_bytes()


# ---------------------------------------------------------------------------------- tests
def test_good_agent_validates_with_revocation_checked(pki: dict[str, Any]) -> None:
    path, context = validate(pki, "good")
    assert path.pkix_len == 2 and not context.soft_fail_exceptions
    crls, statuses = fetched(context)
    _, root_cn = _names(pki)
    # the agent: OCSP (good); the issuing CA: the root's complete CRL and its delta
    assert statuses == ["good"]
    assert (root_cn, False) in crls and (root_cn, True) in crls
    _, soft = validate(pki, "good", mode="soft-fail")  # refused too, before issue 12
    assert not soft.soft_fail_exceptions and fetched(soft) == fetched(context)


def test_good_agent_validates_on_crls_alone_with_the_delta(pki: dict[str, Any]) -> None:
    _, context = validate(pki, "good", CRL_ONLY)
    crls, statuses = fetched(context)
    issuing_cn, root_cn = _names(pki)
    assert statuses == []
    assert sorted(set(crls)) == sorted(
        {(issuing_cn, False), (issuing_cn, True), (root_cn, False), (root_cn, True)}
    )


def test_a_missing_delta_crl_fails_hard(pki: dict[str, Any]) -> None:
    """The negative control: the delta really is fetched and required (hard-fail)."""
    delta = pki["data_dir"] / "crl" / "root-delta.crl"
    aside = delta.with_name("aside.bin")
    delta.rename(aside)
    try:
        with pytest.raises(PathValidationError, match=NO_DELTA):
            validate(pki, "good")
    finally:
        aside.rename(delta)
    validate(pki, "good")


def test_revoked_agent_is_rejected_by_ocsp_and_by_crl(pki: dict[str, Any]) -> None:
    _, serial = pki["certs"]["revoked"]
    validate(pki, "revoked")
    cli(pki, "revoke", serial, "--reason", "keyCompromise")
    publish(pki, "--full")
    with pytest.raises(RevokedError, match=r"^OCSP response indicates .* compromised key"):
        validate(pki, "revoked")
    with pytest.raises(RevokedError, match=r"^CRL indicates .* compromised key"):
        validate(pki, "revoked", CRL_ONLY)


def test_held_agent_is_rejected_while_on_hold_and_valid_after_release(
    pki: dict[str, Any],
) -> None:
    _, serial = pki["certs"]["held"]
    validate(pki, "held")
    cli(pki, "revoke", serial, "--reason", "certificateHold")
    publish(pki, "--full")
    with pytest.raises(RevokedError, match=r"^OCSP response indicates .* certificate hold"):
        validate(pki, "held")
    with pytest.raises(RevokedError, match=r"^CRL indicates .* certificate hold"):
        validate(pki, "held", CRL_ONLY)
    release_hold(pki, serial)
    publish(pki, "--full")
    _, context = validate(pki, "held")
    assert fetched(context)[1] == ["good"]
    validate(pki, "held", CRL_ONLY)


def test_hold_and_release_known_only_from_the_delta_crl(pki: dict[str, Any]) -> None:
    """On CRLs alone: a hold published only in the delta rejects; a release published only in
    the delta (the complete CRL still lists the hold) validates again: the validator combines
    the pair as RFC 5280 6.3.3 (i)-(k) says, so it must have used the delta."""
    _, serial = pki["certs"]["held-crl"]
    number = int(serial, 16)
    publish(pki, "--full")
    validate(pki, "held-crl", CRL_ONLY)
    cli(pki, "revoke", serial, "--reason", "certificateHold")
    publish(pki, "--delta")
    assert number not in revoked_serials(_crl(pki, "issuing.crl"))
    assert number in revoked_serials(_crl(pki, "issuing-delta.crl"))
    with pytest.raises(RevokedError, match=r"^CRL indicates .* certificate hold"):
        validate(pki, "held-crl", CRL_ONLY)
    publish(pki, "--full")
    release_hold(pki, serial)
    publish(pki, "--delta")
    assert number in revoked_serials(_crl(pki, "issuing.crl"))  # the hold, in the base
    path, context = validate(pki, "held-crl", CRL_ONLY)
    assert path.pkix_len == 2 and fetched(context)[1] == []
