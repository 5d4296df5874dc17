"""The responder's token config never hands the responder the CA token's PIN (review 3: an
``ocsp_pin_file`` naming the CA's PIN file, or holding the same PIN, was accepted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ca.config import Settings
from ca.errors import CAError, ErrorCode
from ca.responder_token import responder_token_config

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def _settings(tmp_path: Path, ocsp_pin: str, ocsp_pin_file: Path | None = None) -> Settings:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "user.pin").write_text("ca-pin-1234\n")
    (secrets / "user.pin").chmod(0o600)  # read_secret_file refuses files others may read
    pin_file = ocsp_pin_file or secrets / "ocsp-user.pin"
    if not pin_file.exists():
        pin_file.write_text(ocsp_pin + "\n")
        pin_file.chmod(0o600)
    return Settings(
        data_dir=tmp_path,
        pkcs11_module=MODULE,
        manage_softhsm=False,  # a real HSM: no SoftHSM2 needed for the test
        ocsp_pin_file=str(pin_file),
    )


def test_the_responder_gets_its_own_pin(tmp_path: Path) -> None:
    config = responder_token_config(_settings(tmp_path, "ocsp-pin-5678"))
    assert config.user_pin == "ocsp-pin-5678" and config.token_label == "agentca-ocsp"


@pytest.mark.parametrize("spelling", ["secrets/user.pin", "secrets/../secrets/user.pin"])
def test_the_ca_pin_file_is_refused(tmp_path: Path, spelling: str) -> None:
    settings = _settings(tmp_path, "", tmp_path / "secrets" / "user.pin")
    settings = settings.replace(ocsp_pin_file=str(tmp_path / spelling))
    for create in (False, True):
        with pytest.raises(CAError) as err:
            responder_token_config(settings, create=create)
        assert err.value.code is ErrorCode.CONFIG and "PIN" in err.value.detail


def test_the_ca_pin_is_refused_on_the_ca_side(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "ca-pin-1234")  # a copy of the CA's PIN
    with pytest.raises(CAError) as err:
        responder_token_config(settings, create=True)
    assert err.value.code is ErrorCode.CONFIG and "CA token's PIN" in err.value.detail
