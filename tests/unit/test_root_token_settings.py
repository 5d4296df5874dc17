"""The offline root's settings (decision 0034): validated where settings are built."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ca.ceremony import CEREMONY_AHEAD, next_due
from ca.config import Settings, load_settings
from ca.errors import CAError, ErrorCode


def test_empty_label_keeps_the_root_in_the_ca_token(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert not s.root_offline and s.root_crl_validity_days == 90
    on = Settings(data_dir=tmp_path, root_token_label="agentca-root")
    assert on.root_offline
    assert on.effective_root_pin_file == tmp_path / "secrets/root-user.pin"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"root_token_label": "agentca"}, "another token than token_label"),
        ({"root_token_label": "agentca-ocsp"}, "another token than token_label"),
        ({"root_token_label": "r" * 33}, "at most 32 bytes"),
        ({"root_token_label": " root"}, "surrounding spaces"),
        ({"root_pin_file": "/x/root.pin"}, "needs 'root_token_label'"),
        ({"root_crl_validity_days": 0}, "between 1 and 366"),
        ({"root_crl_validity_days": 400}, "between 1 and 366"),
    ],
)
def test_bad_root_settings_are_one_config_error(
    tmp_path: Path, changes: dict[str, object], words: str
) -> None:
    with pytest.raises(CAError) as info:
        Settings(data_dir=tmp_path, **changes)  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.CONFIG and words in info.value.detail


@pytest.mark.parametrize("other", ["hsm_pin_file", "ocsp_pin_file"])
def test_the_root_pin_file_is_its_own(tmp_path: Path, other: str) -> None:
    pin = str(tmp_path / "same.pin")
    with pytest.raises(CAError) as info:
        Settings(data_dir=tmp_path, root_token_label="root", root_pin_file=pin, **{other: pin})
    assert other in info.value.detail


def test_root_settings_come_from_the_environment(tmp_path: Path) -> None:
    s = load_settings(
        {
            "AGENTCA_DATA_DIR": str(tmp_path),
            "AGENTCA_ROOT_TOKEN_LABEL": "agentca-root",
            "AGENTCA_ROOT_CRL_VALIDITY_DAYS": "30",
        }
    )
    assert s.root_token_label == "agentca-root" and s.root_crl_validity_days == 30


def test_the_next_ceremony_is_due_two_weeks_before_the_first_end() -> None:
    t = datetime(2027, 1, 1, tzinfo=UTC)
    assert next_due(t, None) == t - CEREMONY_AHEAD
    assert next_due(t, t - timedelta(days=1)) == t - timedelta(days=15)
    assert next_due(t, t + timedelta(days=1)) == t - timedelta(days=14)
