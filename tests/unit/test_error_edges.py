"""The error family names failures; each edge maps every code, and the values never move.

``ca.errors`` keeps a slug and a title per code. The HTTP statuses live in ``ca.api.statuses``,
the exit codes in ``cli.exit_codes``, the OCSP response statuses in ``ocsp.responder``
(docs/decisions/0021-errors-at-the-edges.md).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from ca.api.problems import PROBLEM_BASE, problem_body, type_uri
from ca.api.statuses import HTTP_STATUS, http_status
from ca.errors import CAError, ErrorCode
from cli.exit_codes import EXIT_CODE, exit_code

ROOT = Path(__file__).resolve().parents[2]

# What ErrorCode carried before issue 11 as (slug, http_status, cli_exit_code): released
# values that clients and scripts rely on, so the tables at the edges must keep them.
RELEASED = {
    "BAD_REQUEST": ("bad-request", 400, 2),
    "BAD_CSR": ("bad-csr", 400, 3),
    "CSR_SIGNATURE": ("csr-signature-invalid", 400, 3),
    "UNSUPPORTED_KEY": ("unsupported-key-type", 400, 3),
    "INVALID_SCOPE": ("invalid-scope", 400, 2),
    "INVALID_DIGEST": ("invalid-digest", 400, 2),
    "INVALID_NAME": ("invalid-name", 400, 2),
    "INVALID_VALIDITY": ("invalid-validity", 400, 2),
    "INVALID_EXTENSION": ("invalid-extension", 400, 2),
    "POLICY_REFUSED": ("policy-refused", 403, 4),
    "UNAUTHENTICATED": ("unauthenticated", 401, 5),
    "FORBIDDEN": ("forbidden", 403, 5),
    "NOT_FOUND": ("not-found", 404, 6),
    "CONFLICT": ("conflict", 409, 7),
    "ALREADY_REVOKED": ("already-revoked", 409, 7),
    "TOO_LARGE": ("payload-too-large", 413, 2),
    "UNSUPPORTED_MEDIA": ("unsupported-media-type", 415, 2),
    "RATE_LIMITED": ("rate-limited", 429, 8),
    "NOT_INITIALISED": ("not-initialised", 503, 9),
    "CONFIG": ("configuration", 500, 10),
    "HSM_PIN": ("hsm-pin-incorrect", 503, 11),
    "HSM_TOKEN_MISSING": ("hsm-token-missing", 503, 11),
    "HSM_KEY_MISSING": ("hsm-key-missing", 503, 11),
    "HSM_MECHANISM": ("hsm-mechanism-unsupported", 503, 11),
    "HSM_FAILURE": ("hsm-failure", 503, 11),
    "HSM_UNAVAILABLE": ("hsm-unavailable", 503, 11),
    "CLOCK_SKEW": ("clock-skew", 503, 13),
    "DB_UNAVAILABLE": ("database-unavailable", 503, 12),
    "STORAGE_FULL": ("storage-full", 507, 14),
    "INTERNAL": ("internal", 500, 1),
    # the action ledger (decision 0056)
    "ACTION_GAP": ("action-sequence-gap", 422, 2),
    "CHECKPOINT_INVALID": ("checkpoint-invalid", 422, 2),
}


def test_both_edge_tables_are_total() -> None:
    codes = set(ErrorCode)
    assert set(HTTP_STATUS) == codes
    assert set(EXIT_CODE) == codes
    for code in ErrorCode:
        assert code.title and code.slug
        assert 400 <= http_status(code) <= 599
        assert 1 <= exit_code(code) <= 125  # never 0, never a shell's 126+ or a signal's


def test_slugs_statuses_and_exit_codes_are_the_released_ones() -> None:
    assert {code.name for code in ErrorCode} == set(RELEASED)
    for code in ErrorCode:
        slug, status, exit_status = RELEASED[code.name]
        assert (code.slug, http_status(code), exit_code(code)) == (slug, status, exit_status)
        assert ErrorCode(slug) is code


def test_the_problem_body_is_unchanged() -> None:
    err = CAError(ErrorCode.STORAGE_FULL, "the disk is full", retry_after=3)
    assert problem_body(err, instance="/v1/enroll") == {
        "type": "https://agentca.dev/problems/storage-full",
        "title": "Insufficient storage",
        "status": 507,
        "detail": "the disk is full",
        "instance": "/v1/enroll",
        "retry_after": 3,
    }
    assert type_uri(ErrorCode.CONFLICT) == PROBLEM_BASE + "conflict"
    assert str(err) == "storage-full: the disk is full" and err.title == "Insufficient storage"


def test_the_error_family_knows_nothing_of_http_or_click() -> None:
    tree = ast.parse((ROOT / "ca" / "errors.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & {"flask", "werkzeug", "click", "ca", "cli", "ocsp"}, imported
    code = (
        "import sys, ca.errors; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'werkzeug', 'click'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_error_family_has_no_edge_attributes() -> None:
    for name in ("http_status", "exit_code", "type_uri"):
        assert not hasattr(ErrorCode.CONFLICT, name)
    assert not hasattr(CAError(ErrorCode.CONFLICT, "x"), "problem")


def test_the_exit_codes_operators_read_are_the_ones_the_cli_uses() -> None:
    text = " ".join((ROOT / "docs" / "operators.md").read_text().split())
    match = re.search(r"Exit codes: (.*?)\. Over", text)
    assert match, "docs/operators.md lost its 'Exit codes:' paragraph"
    documented = {int(n) for n in re.findall(r"(?:^|, )(\d+) ", match.group(1))}
    assert documented == {0} | set(EXIT_CODE.values())
    for number, words in ((13, "clock skew"), (14, "storage full"), (8, "rate limited")):
        assert f", {number} {words}" in match.group(1), words
