"""The SDK side of runtime attestation (decision 0051): the launcher's file, never argv; and
the gateway core's attested-provenance check."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.attestation import ENV_VAR, MAX_BYTES, AttestationError, AttestationSource
from gateway.problems import Check, Denied
from gateway.verifier import check_attested
from wire.extensions import Attestation, Digest


def test_the_file_is_read_afresh_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "attestation.jwt"
    path.write_text("a.b.c\n")
    source = AttestationSource(path)
    assert source.read() == "a.b.c"
    path.write_text("d.e.f")
    assert source.read() == "d.e.f"  # a refreshed file gives the fresh statement
    path.write_text("x" * (MAX_BYTES + 1))
    with pytest.raises(AttestationError, match="over"):
        source.read()
    path.write_text("not a jws")
    with pytest.raises(AttestationError, match="compact JWS"):
        source.read()
    with pytest.raises(AttestationError, match="cannot read"):
        AttestationSource(tmp_path / "missing").read()


def test_the_path_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert AttestationSource.from_env() is None
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "a.jwt"))
    assert AttestationSource.from_env() == AttestationSource(tmp_path / "a.jwt")


def _entry(attestation: Attestation | None) -> Any:
    return SimpleNamespace(
        extensions=SimpleNamespace(attestation=attestation), identity=SimpleNamespace(serial="1a")
    )


def test_check_attested_names_the_check() -> None:
    marker = Attestation("orchestrator-jws-v1", "orch.prod", "k1", 1_800_000_000, Digest(bytes(32)))
    check_attested(_entry(marker), True)
    check_attested(_entry(marker), frozenset({"orch.prod"}))
    with pytest.raises(Denied) as info:
        check_attested(_entry(None), True)
    assert info.value.check is Check.NOT_ATTESTED and info.value.check.status == 403
    assert "self-declared" in str(
        info.value.detail if hasattr(info.value, "detail") else info.value
    )
    with pytest.raises(Denied) as info:
        check_attested(_entry(marker), frozenset({"orch.staging"}))
    assert info.value.check is Check.NOT_ATTESTED


def test_an_sev_snp_envelope_is_read_as_sent(tmp_path: Path) -> None:
    path = tmp_path / "snp.json"
    envelope = '{"type": "agentca-sev-snp-v1", "report": "' + "A" * 9000 + '"}'
    path.write_text(envelope + "\n")
    assert AttestationSource(path).read() == envelope  # over a JWS's 8 KiB, under 16 KiB
    path.write_text("{not closed")
    with pytest.raises(AttestationError, match="SEV-SNP envelope"):
        AttestationSource(path).read()
