"""Freshest CRL in certificates (decision 0023): agent and issuing CA certificates name the
delta CRL their issuer's complete CRL names, the lint holds them to it, and the CRL pair is the
one a strict RFC 5280 validator (section 6.3.3) combines."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ca import lint
from ca.crl_publisher import CrlPublisher, delta_crl_url, full_crl_url
from ca.profile import (
    AgentCertificateSpec,
    CertificateUrls,
    agent_certificate_builder,
    freshest_crl,
    signature_hash,
)
from tests.unit.core_support import Core, make_core
from tests.unit.helpers import NOW, sample_extensions, software_hierarchy

BASE = "http://127.0.0.1:8400/crl"
URLS = CertificateUrls(
    "http://o/ocsp",
    "http://o/ca.der",
    full_crl_url(BASE, "issuing"),
    delta_crl_url(BASE, "issuing"),
)
_, _ROOT, _ISSUING_KEY, ISSUING = software_hierarchy()


def _spec() -> AgentCertificateSpec:
    return AgentCertificateSpec(
        serial=0x1234567890ABCDEF,
        agent_name="agent-1",
        organization="Enterprise Inc",
        trust_domain="agents.example",
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        extensions=sample_extensions(),
        not_before=NOW - timedelta(seconds=60),
        not_after=NOW + timedelta(hours=1),
    )


def _freshest(cert: x509.Certificate) -> tuple[bool, list[str]]:
    ext = cert.extensions.get_extension_for_class(x509.FreshestCRL)
    return ext.critical, [n.value for p in ext.value for n in p.full_name or []]


def _cdp(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    return [n.value for p in ext.value for n in p.full_name or []]


@pytest.fixture
def core(tmp_path: Path) -> Core:
    return make_core(tmp_path)


def test_urls_are_named_in_one_place() -> None:
    assert full_crl_url(BASE + "/", "issuing") == f"{BASE}/issuing.crl"
    assert delta_crl_url(BASE + "/", "root") == f"{BASE}/root-delta.crl"


def test_agent_certificate_carries_the_issuing_delta_url_and_passes_the_lint() -> None:
    cert = lint.sign_agent_certificate(_spec(), ISSUING, _ISSUING_KEY, URLS)
    assert _freshest(cert) == (False, [f"{BASE}/issuing-delta.crl"])
    assert _cdp(cert) == [f"{BASE}/issuing.crl"]


def test_no_delta_url_means_no_freshest_crl() -> None:
    cert = lint.sign_agent_certificate(
        _spec(), ISSUING, _ISSUING_KEY, replace(URLS, delta_crl_url=None)
    )
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.FreshestCRL)


def _linted(builder: x509.CertificateBuilder) -> x509.Certificate:
    return builder.sign(lint.lint_key_for(_ISSUING_KEY), signature_hash(_ISSUING_KEY))


@pytest.mark.parametrize(
    ("urls_in_cert", "critical", "expected", "needle"),
    [
        (URLS, False, None, "publishes no delta CRL"),
        (replace(URLS, delta_crl_url=None), False, URLS.delta_crl_url, "is missing"),
        (
            replace(URLS, delta_crl_url=f"{BASE}/other-delta.crl"),
            False,
            URLS.delta_crl_url,
            "names",
        ),
        (replace(URLS, delta_crl_url=URLS.crl_url), False, URLS.delta_crl_url, "names"),
    ],
    ids=["unexpected", "missing", "other-url", "complete-crl-url"],
)
def test_lint_refuses_a_freshest_crl_that_is_not_the_delta_url(
    urls_in_cert: CertificateUrls, critical: bool, expected: str | None, needle: str
) -> None:
    cert = _linted(agent_certificate_builder(_spec(), ISSUING, urls_in_cert))
    with pytest.raises(lint.LintError, match=needle):
        lint.lint_freshest_crl(cert, expected)


def test_lint_refuses_a_critical_or_doubled_freshest_crl() -> None:
    plain = agent_certificate_builder(_spec(), ISSUING, replace(URLS, delta_crl_url=None))
    assert URLS.delta_crl_url is not None
    critical = _linted(plain.add_extension(freshest_crl(URLS.delta_crl_url), critical=True))
    with pytest.raises(lint.LintError, match="non-critical"):
        lint.lint_freshest_crl(critical, URLS.delta_crl_url)
    point = freshest_crl(URLS.delta_crl_url)[0]
    doubled = _linted(plain.add_extension(x509.FreshestCRL([point, point]), critical=False))
    with pytest.raises(lint.LintError, match="names"):
        lint.lint_freshest_crl(doubled, URLS.delta_crl_url)


def test_issuance_refuses_a_certificate_whose_freshest_crl_is_not_the_delta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check runs on the linted certificate, before the issuing key signs anything."""
    signed: list[int] = []
    real_sign = x509.CertificateBuilder.sign

    def counting_sign(
        self: x509.CertificateBuilder, key: object, *a: object, **k: object
    ) -> object:
        if key is _ISSUING_KEY:
            signed.append(1)
        return real_sign(self, key, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(x509.CertificateBuilder, "sign", counting_sign)
    wrong = agent_certificate_builder(
        _spec(), ISSUING, replace(URLS, delta_crl_url=f"{BASE}/x.crl")
    )
    monkeypatch.setattr(lint, "agent_certificate_builder", lambda *_a: wrong)
    with pytest.raises(lint.LintError, match="Freshest CRL names"):
        lint.sign_agent_certificate(_spec(), ISSUING, _ISSUING_KEY, URLS)
    assert signed == []


def test_ca_certificates_name_the_delta_their_issuer_publishes(core: Core) -> None:
    base = core.settings.effective_crl_base_url
    issuing, root = core.authority.chain()
    assert _freshest(issuing) == (False, [delta_crl_url(base, "root")])
    assert _cdp(issuing) == [full_crl_url(base, "root")]
    with pytest.raises(x509.ExtensionNotFound):  # the trust anchor: nobody checks its status
        root.extensions.get_extension_for_class(x509.FreshestCRL)
    agent = core.issue().certificate
    assert agent is not None
    assert _freshest(agent) == (False, [delta_crl_url(base, "issuing")])


def test_published_crl_pair_is_what_the_certificates_name(core: Core, tmp_path: Path) -> None:
    """For each issuer: the complete CRL's Freshest CRL is the certificates' Freshest CRL, the
    delta's Delta CRL Indicator is the complete CRL's number, both carry the issuer's key id,
    a CRL number and nextUpdate, and neither has an IDP that could disagree with the CDP."""
    agent = core.issue().certificate
    assert agent is not None
    issuing, root = core.authority.chain()
    publisher = CrlPublisher(
        core.sessions, core.keys, tmp_path / "crl", core.settings.effective_crl_base_url,
        clock=core.clock,
    )  # fmt: skip
    published = {(p.issuer, p.kind): p for p in publisher.publish_all(mode="full")}
    for name, issuer, subject in (("issuing", issuing, agent), ("root", root, issuing)):
        full = x509.load_der_x509_crl(published[name, "full"].path.read_bytes())
        delta = x509.load_der_x509_crl(published[name, "delta"].path.read_bytes())
        fresh = full.extensions.get_extension_for_class(x509.FreshestCRL)
        assert [n.value for p in fresh.value for n in p.full_name or []] == _freshest(subject)[1]
        number = full.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
        assert indicator.critical and indicator.value.crl_number == number
        assert delta.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > number
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        for crl in (full, delta):
            aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
            assert aki.value.key_identifier == ski
            assert crl.issuer == issuer.subject and crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
            assert crl.next_update_utc is not None and crl.next_update_utc > core.clock()
            with pytest.raises(x509.ExtensionNotFound):
                crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
        with pytest.raises(x509.ExtensionNotFound):
            delta.extensions.get_extension_for_class(x509.FreshestCRL)
        assert published[name, "full"].path.name == full_crl_url(BASE, name).rsplit("/", 1)[1]
        assert _cdp(subject) == [full_crl_url(core.settings.effective_crl_base_url, name)]


def test_init_lints_the_issuing_ca_certificate_before_the_root_key_signs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Like agent certificates: a Freshest CRL that is not the root's delta is refused on the
    throwaway-key certificate; the root key never signs an issuing CA certificate that fails."""
    from ca import profile

    ca_signed: list[str] = []
    real_sign = x509.CertificateBuilder.sign

    def counting_sign(
        self: x509.CertificateBuilder, key: object, *a: object, **k: object
    ) -> object:
        cert = real_sign(self, key, *a, **k)  # type: ignore[arg-type]
        if cert.subject != cert.issuer and key not in lint._keys.values():
            ca_signed.append(cert.subject.rfc4514_string())
        return cert

    monkeypatch.setattr(x509.CertificateBuilder, "sign", counting_sign)
    monkeypatch.setattr(profile, "freshest_crl", lambda _url: freshest_crl(f"{BASE}/x.crl"))
    with pytest.raises(lint.LintError, match="Freshest CRL names"):
        make_core(tmp_path)
    assert ca_signed == []


def test_a_changed_crl_base_url_is_warned_about_when_the_issuing_ca_loads(
    core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    """The issuing CA certificate names the root's CRLs under the base of `agentca init`; the
    root's complete CRL now names its delta under the new base: say so."""
    from ca.hierarchy import baked_crl_url_warnings

    hierarchy = core.authority.hierarchy
    issuing = hierarchy.signing_issuer().certificate
    old = core.settings.effective_crl_base_url
    assert baked_crl_url_warnings(issuing, "root", old) == []
    hierarchy.settings = hierarchy.settings.replace(crl_base_url="https://crl.example/agentca")
    hierarchy._issuing = None
    with caplog.at_level("WARNING", logger="agentca.hierarchy"):
        hierarchy.signing_issuer()
    text = caplog.text
    assert "crl_base_url changed since agentca init" in text
    assert f"{old}/root-delta.crl" in text and "https://crl.example/agentca/root-delta.crl" in text
    assert "CRL distribution point" in text
