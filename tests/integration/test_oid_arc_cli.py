"""The OID arc on the command line (decision 0022): ``agentca init`` warns about the example
arc, ``agentca init --oid-arc`` refuses a bad arc before creating anything, ``agentca oid-arc
set`` moves the CA and warns about an arc Go and GnuTLS refuse, on stderr only (``--json``
stays parseable)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ca.oids import DEFAULT_ARC, LEGACY_ARC
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.integration

PEN_ARC = "1.3.6.1.4.1.99999.7"


def test_init_warns_about_the_example_arc_and_set_moves_the_ca(tmp_path: Path) -> None:
    done = run_cli("init", data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "agentca: warning:" in done.stderr and "RFC 5612" in done.stderr
    assert "--oid-arc" in done.stderr
    assert f"oid-arc  {DEFAULT_ARC}" in done.stdout

    moved = run_cli("oid-arc", "set", PEN_ARC, "--json", data_dir=tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert moved.stderr == ""  # a PEN arc: nothing to warn about
    doc = json.loads(moved.stdout)
    assert doc["oid_arc"] == PEN_ARC
    assert doc["accepted_oid_arcs"] == [PEN_ARC, DEFAULT_ARC.dotted]
    assert doc["warnings"] == []

    big = run_cli("oid-arc", "set", LEGACY_ARC.dotted, "--json", data_dir=tmp_path)
    assert big.returncode == 0, big.stderr
    doc = json.loads(big.stdout)  # the warning did not reach stdout
    assert doc["accepted_oid_arcs"] == [
        LEGACY_ARC.dotted,
        PEN_ARC,
        DEFAULT_ARC.dotted,
    ]  # newest first
    assert "Go crypto/x509" in big.stderr and "GnuTLS" in big.stderr
    assert doc["warnings"] and "2**31" in doc["warnings"][0]

    # the repeat rule (docs/cli.md): the same end state is success, with a note
    again = run_cli("oid-arc", "set", LEGACY_ARC.dotted, "--json", data_dir=tmp_path)
    assert again.returncode == 0 and "already issues under" in again.stderr
    assert json.loads(again.stdout)["changed"] is False

    shown = run_cli("oid-arc", "show", "--json", data_dir=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["oid_arc"] == LEGACY_ARC.dotted

    bad = run_cli("oid-arc", "set", "1.3.6.01", data_dir=tmp_path)
    assert bad.returncode != 0
    assert bad.stderr.startswith("agentca: error: oid_arc:") and bad.stderr.count("\n") == 1

    for standard in ("1.3.6.1.5.5.7", "2.5.29", f"1.3.6.1.4.1.{2**128}"):
        refused = run_cli("oid-arc", "set", standard, data_dir=tmp_path)
        assert refused.returncode != 0
        assert refused.stderr.startswith("agentca: error: oid_arc:"), refused.stderr
    shown = run_cli("oid-arc", "show", "--json", data_dir=tmp_path)
    assert json.loads(shown.stdout)["oid_arc"] == LEGACY_ARC.dotted  # nothing was recorded


def test_init_refuses_a_bad_arc_before_creating_anything(tmp_path: Path) -> None:
    done = run_cli("init", "--oid-arc", "1.40.5", data_dir=tmp_path)
    assert done.returncode != 0
    assert "oid_arc" in done.stderr and "[configuration]" in done.stderr
    assert not (tmp_path / "agentca.sqlite3").exists()


def test_init_refuses_an_arc_under_pkix_before_creating_anything(tmp_path: Path) -> None:
    done = run_cli("init", "--oid-arc", "1.3.6.1.5.5.7", data_dir=tmp_path)
    assert done.returncode != 0
    assert "standard arc" in done.stderr and "[configuration]" in done.stderr
    assert not (tmp_path / "agentca.sqlite3").exists()


def test_init_with_a_large_arc_warns_naming_the_verifiers(tmp_path: Path) -> None:
    done = run_cli("init", "--oid-arc", LEGACY_ARC.dotted, data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Go crypto/x509" in done.stderr and "SPIRE" in done.stderr and "GnuTLS" in done.stderr
    assert "RFC 5612" not in done.stderr
    assert f"oid-arc  {LEGACY_ARC}" in done.stdout
