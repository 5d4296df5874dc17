"""The overlap after an OID arc move covers every certificate that may still be valid, not only
those a fresh ``max_validity_hours`` allows (decision 0022)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from ca.oids import OidArc
from tests.unit.core_support import make_core

NEW_ARC = OidArc("1.3.6.1.4.1.99999.7")


def test_a_lowered_max_validity_does_not_cut_the_overlap_short(tmp_path: Path) -> None:
    core = make_core(tmp_path)
    hierarchy = core.authority.hierarchy
    long_lived = core.authority.issue(
        core.request(timedelta(hours=100)), actor="test"
    )  # max_validity_hours is 168
    old_arc = hierarchy.arc_state().current
    # the operator lowers max_validity_hours, restarts, then moves the arc
    hierarchy.settings = hierarchy.settings.replace(max_validity_hours=1)
    state = hierarchy.set_oid_arc(NEW_ARC)
    assert state.previous[0].arc == old_arc
    assert state.previous[0].until >= long_lived.not_after
    core.clock.advance(timedelta(hours=99))  # the certificate is still valid
    assert old_arc in hierarchy.arc_state().accepted(core.clock())


def test_without_longer_certificates_the_overlap_is_max_validity(tmp_path: Path) -> None:
    core = make_core(tmp_path)
    hierarchy = core.authority.hierarchy
    core.issue()
    now = core.clock()
    state = hierarchy.set_oid_arc(NEW_ARC)
    assert state.previous[0].until == now + hierarchy.settings.max_validity


def test_a_csr_under_the_new_arc_is_read_by_a_process_that_cached_the_old_arcs(
    tmp_path: Path,
) -> None:
    """Another process (the API) cached the accepted arcs; `agentca oid-arc set` moved the CA;
    an agent that read the new arc from the metadata (served fresh) sends its CSR under it."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from ca.enrollment import EnrollmentService
    from ca.extensions import build_agent_csr
    from ca.hierarchy import Hierarchy
    from tests.unit.helpers import sample_extensions

    core = make_core(tmp_path)
    api = core.authority.hierarchy
    assert NEW_ARC not in api.accepted_arcs()  # cached for ACCEPTED_ARCS_TTL
    cli = Hierarchy(core.settings, core.sessions, core.keys, api.journal, core.clock)
    cli.set_oid_arc(NEW_ARC)
    provenance = sample_extensions().provenance
    csr = build_agent_csr(
        ec.generate_private_key(ec.SECP256R1()), "exec-agent", provenance, arc=NEW_ARC
    )
    service = EnrollmentService(core.settings, core.authority, core.registry, core.tokens)
    assert service._csr_provenance(csr) == provenance


def test_moving_to_the_current_arc_is_a_conflict_decided_under_the_lock(tmp_path: Path) -> None:
    """Two `oid-arc set B` at once: the CLI's own check runs before the transaction, so the
    hierarchy refuses the second one itself, writing no `B -> B` ledger entry."""
    import pytest

    from ca.errors import CAError, ErrorCode

    core = make_core(tmp_path)
    core.authority.hierarchy.set_oid_arc(NEW_ARC)
    before = core.events()
    with pytest.raises(CAError) as caught:
        core.authority.hierarchy.set_oid_arc(NEW_ARC)
    assert caught.value.code is ErrorCode.CONFLICT
    assert core.events() == before
