"""Review findings on the WIMSE profile and WITs: each test failed before its fix."""

from __future__ import annotations

from gateway.httpsig import parse_signature


def test_fast_path_keeps_a_component_holding_a_parenthesis() -> None:
    """A ")" inside a covered component string ended the inner list early on the fast path:
    ``("@method" "ab)" "@path")`` became ``("@method", "a")``, unlike the general parser and
    unlike what the signed ``@signature-params`` line says."""
    headers = {
        "signature-input": 'sig=("@method" "ab)" "@path");created=1;tag="t"',
        "signature": "sig=:AAAA:",
    }
    assert parse_signature(headers, "t").covered == ("@method", "ab)", "@path")
