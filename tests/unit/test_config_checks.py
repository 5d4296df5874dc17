"""Configuration mistakes are caught (issue 13): unknown names, URLs, secret file modes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from ca.config import (
    Settings,
    derived_items,
    effective_items,
    load_settings,
    load_settings_with_sources,
    read_secret_file,
    url_warnings,
)
from ca.errors import CAError, ErrorCode

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "agentca.example.toml"


def test_an_unknown_variable_is_an_error_with_a_suggestion() -> None:
    with pytest.raises(CAError) as info:
        load_settings({"AGENTCA_DATABSE_URL": "postgresql://x/y"})
    assert info.value.code is ErrorCode.CONFIG
    assert "AGENTCA_DATABSE_URL" in info.value.detail
    assert "did you mean AGENTCA_DATABASE_URL?" in info.value.detail


def test_an_unknown_variable_far_from_any_setting_has_no_suggestion() -> None:
    with pytest.raises(CAError) as info:
        load_settings({"AGENTCA_ZZZZZZZZZZZZ": "1"})
    assert "did you mean" not in info.value.detail


def test_harness_variables_and_the_config_path_are_not_settings() -> None:
    env = {"AGENTCA_TEST_PG_PORT": "5432", "AGENTCA_BENCH_X": "1", "AGENTCA_FAULTS_FULL": "1"}
    assert load_settings(env) == Settings()


def test_an_unknown_toml_key_suggests_the_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "agentca.toml"
    cfg.write_text("[agentca]\nlisten_prot = 9000\n")
    with pytest.raises(CAError, match=r"listen_prot.*did you mean listen_port\?"):
        load_settings({}, cfg)


def test_sources_name_default_file_and_env(tmp_path: Path) -> None:
    cfg = tmp_path / "agentca.toml"
    cfg.write_text('workers = 3\ntrust_domain = "file.example"\n')
    settings, sources = load_settings_with_sources({"AGENTCA_WORKERS": "5"}, cfg)
    assert settings.workers == 5 and sources["workers"] == "env AGENTCA_WORKERS"
    assert sources["trust_domain"] == f"file {cfg}"
    assert sources["listen_port"] == "default"


def test_urls_follow_the_listen_address_unless_set() -> None:
    s = Settings(listen_host="10.1.2.3", listen_port=9400, ocsp_listen_port=9401)
    assert s.effective_public_base_url == "http://10.1.2.3:9400"
    assert s.effective_crl_base_url == "http://10.1.2.3:9400/crl"
    assert s.effective_ocsp_url == "http://10.1.2.3:9401/ocsp"
    assert Settings(listen_host="::1").effective_public_base_url == "http://[::1]:8400"
    assert Settings(listen_host="0.0.0.0").effective_ocsp_url == "http://127.0.0.1:8401/ocsp"
    pinned = Settings(listen_port=9400, public_base_url="https://ca.example/")
    assert pinned.effective_public_base_url == "https://ca.example"
    assert pinned.effective_crl_base_url == "https://ca.example/crl"
    assert url_warnings(Settings()) == []


def test_urls_pointing_at_another_listener_are_warned_about() -> None:
    stale = Settings(listen_port=9400, public_base_url="http://127.0.0.1:8400")
    warnings = url_warnings(stale)
    assert any(w.startswith("public_base_url http://127.0.0.1:8400") for w in warnings)
    assert any(w.startswith("crl_base_url") for w in warnings)
    ocsp = url_warnings(Settings(ocsp_url="http://localhost:8999/ocsp"))
    assert len(ocsp) == 1 and "OCSP responder" in ocsp[0]
    # names cannot be checked offline; a declared proxy may map any port
    assert url_warnings(Settings(public_base_url="https://ca.example:8443")) == []
    assert url_warnings(stale.replace(trusted_proxy_hops=1)) == []


def test_database_passwords_are_redacted() -> None:
    s = Settings(database_url="postgresql+psycopg://ca:hunter2@db.example:5432/agentca")
    shown = dict(effective_items(s))["database_url"]
    assert shown == "postgresql+psycopg://ca:***@db.example:5432/agentca"
    assert "hunter2" not in repr(derived_items(s))
    assert dict(effective_items(Settings()))["database_url"] == ""


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660, 0o601])
def test_secret_files_open_to_group_or_others_are_refused(tmp_path: Path, mode: int) -> None:
    pin = tmp_path / "user.pin"
    pin.write_text("1234\n")
    pin.chmod(mode)
    with pytest.raises(CAError) as info:
        read_secret_file(pin, "HSM PIN")
    assert info.value.code is ErrorCode.CONFIG
    assert f"{mode:04o}" in info.value.detail and "chmod 600" in info.value.detail


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_secret_files_are_read(tmp_path: Path, mode: int) -> None:
    pin = tmp_path / "user.pin"
    pin.write_text("1234\n")
    pin.chmod(mode)
    assert read_secret_file(pin, "HSM PIN") == "1234"


def test_the_example_config_names_every_setting_at_its_default(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    lines = re.findall(r"^# ([a-z_0-9]+ = .+)$", text, flags=re.MULTILINE)
    doc = tomllib.loads("\n".join(lines))
    fields = set(Settings.__dataclass_fields__)
    assert set(doc) == fields, set(doc) ^ fields
    # every value shown is the default: uncommenting them all changes nothing
    uncommented = tmp_path / "uncommented.toml"
    uncommented.write_text("\n".join(x for x in lines if not x.startswith("data_dir ")) + "\n")
    assert load_settings({}, uncommented) == Settings()


@pytest.mark.parametrize("argv", [["show", "01"], ["list"], ["chain"]])
def test_read_commands_create_nothing(tmp_path: Path, argv: list[str]) -> None:
    from click.testing import CliRunner

    from cli.main import cli

    data_dir = tmp_path / "nowhere"
    result = CliRunner().invoke(cli, argv, env={"AGENTCA_DATA_DIR": str(data_dir)})
    assert result.exit_code != 0
    assert "run 'agentca init' first" in result.output
    assert not data_dir.exists()


def test_config_show_prints_sources_and_redacts(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from cli.main import cli

    env = {
        "AGENTCA_DATA_DIR": str(tmp_path / "d"),
        "AGENTCA_DATABASE_URL": "postgresql://ca:hunter2@db/agentca",
        "AGENTCA_LISTEN_PORT": "9400",
    }
    result = CliRunner().invoke(cli, ["config", "show", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    doc = json.loads(result.stdout)
    assert doc["settings"]["listen_port"] == {"value": 9400, "source": "env AGENTCA_LISTEN_PORT"}
    assert doc["settings"]["public_base_url"]["effective"] == "http://127.0.0.1:9400"
    assert doc["settings"]["database_url"]["value"] == "postgresql://ca:***@db/agentca"
    assert doc["warnings"] == []
    table = CliRunner().invoke(cli, ["config", "show"], env=env)
    assert table.exit_code == 0 and table.output.splitlines()[0].split() == [
        "SETTING",
        "SOURCE",
        "VALUE",
    ]
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("domain", ["Agentca.Local", "agentca.local/x", "spiffe://x", "a b"])
def test_an_invalid_trust_domain_is_a_configuration_error(domain: str) -> None:
    with pytest.raises(CAError) as info:
        load_settings({"AGENTCA_TRUST_DOMAIN": domain})
    assert info.value.code is ErrorCode.CONFIG and "trust_domain" in info.value.detail
