"""`agentca crl publish/show` as real processes, and the CRLs served by `agentca serve` at the
URL in the certificates, fetched by `openssl verify -crl_download` itself."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.crl import revoked_serials
from cli.output import cli_serial
from tests.integration import servers
from tests.integration.conftest import AGENTCA, run_cli
from tests.integration.test_cli import _csr, _issue_args, register_cli_agents


@pytest.fixture(scope="module")
def cli_ca(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A CA (managed token, SQLite) whose certificates point at a port we will serve on."""
    port = servers.free_port()
    data_dir = tmp_path_factory.mktemp("crl-cli")
    env = {"AGENTCA_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
    assert run_cli("init", data_dir=data_dir, env=env).returncode == 0
    work = tmp_path_factory.mktemp("crl-cli-work")
    run_cli("chain", "--root-only", "--out", str(work / "root.pem"), data_dir=data_dir, env=env)
    chain = run_cli("chain", data_dir=data_dir, env=env).stdout
    (work / "issuing.pem").write_text(chain[: chain.index("-----END CERTIFICATE-----") + 26])
    register_cli_agents(data_dir, env)
    certs = {}
    for name in ("good", "bad"):
        out = work / f"{name}.pem"
        issued = run_cli(
            *_issue_args(_csr(work / f"{name}.csr"), **{"--out": str(out)}),
            data_dir=data_dir,
            env=env,
        )
        assert issued.returncode == 0, issued.stderr
        certs[name] = x509.load_pem_x509_certificate(out.read_bytes())
    bad_serial = format(certs["bad"].serial_number, "x")
    revoked = run_cli("revoke", bad_serial, "--reason", "keyCompromise", data_dir=data_dir, env=env)
    assert revoked.returncode == 0, revoked.stderr
    return {"data_dir": data_dir, "env": env, "work": work, "port": port, "certs": certs}


def _cli(ca: dict, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, data_dir=ca["data_dir"], env=ca["env"])


def test_publish_and_show(cli_ca: dict) -> None:
    published = _cli(cli_ca, "crl", "publish", "--full")
    assert published.returncode == 0, published.stderr
    lines = published.stdout.splitlines()
    assert any(line.startswith("issuing: full CRL #") for line in lines)
    assert any(line.startswith("root: delta CRL #") for line in lines)
    shown = _cli(cli_ca, "crl", "show")
    assert shown.returncode == 0, shown.stderr
    assert "type:        complete CRL" in shown.stdout
    assert "entries:     1" in shown.stdout
    bad = cli_serial(cli_ca["certs"]["bad"].serial_number)  # as openssl prints it
    assert f"  {bad}  " in shown.stdout and "keyCompromise" in shown.stdout
    assert "next update: " in shown.stdout and "number:      " in shown.stdout
    delta = _cli(cli_ca, "crl", "show", "--delta", "--issuer", "root")
    assert delta.returncode == 0 and "delta CRL on base CRL #" in delta.stdout
    again = _cli(cli_ca, "crl", "publish", "--issuer", "issuing")  # not due: a delta
    assert again.returncode == 0 and again.stdout.startswith("issuing: delta CRL #")


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["crl", "publish", "--issuer", "nobody"], 6, "no issuer named 'nobody'"),
        (["crl", "publish", "--issuer", "root", "--all"], 2, "--issuer and --all contradict"),
        (["crl", "show", "--issuer", "nobody"], 6, "no CRL for 'nobody'"),
    ],
)
def test_errors_are_one_line(cli_ca: dict, args: list[str], code: int, needle: str) -> None:
    result = _cli(cli_ca, *args)
    assert result.returncode == code
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_every_command_has_help(cli_ca: dict) -> None:
    for args in (["crl"], ["crl", "publish"], ["crl", "show"]):
        result = _cli(cli_ca, *args, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout


def test_served_at_cdp_url_and_used_by_openssl_crl_download(
    cli_ca: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _cli(cli_ca, "crl", "publish", "--full").returncode == 0
    monkeypatch.setattr(servers, "free_port", lambda: cli_ca["port"])
    with servers.agentca_server(
        ["serve", "--workers", "1"], cli_ca["data_dir"], "/health", env=cli_ca["env"]
    ) as (base, _proc):
        cdp = cli_ca["certs"]["bad"].extensions.get_extension_for_class(x509.CRLDistributionPoints)
        url = cdp.value[0].full_name[0].value
        assert url == f"{base}/crl/issuing.crl"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read()
            headers = resp.headers
        assert headers["Content-Type"] == "application/pkix-crl"
        assert headers["Cache-Control"].startswith("public, max-age=")
        assert headers["ETag"] and headers["Last-Modified"] and headers["Expires"]
        assert cli_ca["certs"]["bad"].serial_number in revoked_serials(body)
        conditional = urllib.request.Request(url, headers={"If-None-Match": headers["ETag"]})
        with pytest.raises(urllib.error.HTTPError) as not_modified:
            urllib.request.urlopen(conditional, timeout=10)
        assert not_modified.value.code == 304
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/crl/nobody.crl", timeout=10)
        assert missing.value.code == 404
        assert missing.value.headers["Content-Type"] == "application/problem+json"

        work: Path = cli_ca["work"]

        # The issuing CA's own CDP names the root CRL; the self-signed root has no CDP, so for
        # -crl_check_all openssl gets the root CRL (fetched from that URL) as a file.
        issuing = x509.load_pem_x509_certificate((work / "issuing.pem").read_bytes())
        root_url = issuing.extensions.get_extension_for_class(x509.CRLDistributionPoints)
        with urllib.request.urlopen(root_url.value[0].full_name[0].value, timeout=10) as resp:
            root_crl = x509.load_der_x509_crl(resp.read())
        root = x509.load_pem_x509_certificate((work / "root.pem").read_bytes())
        assert root_crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
        (work / "root-crl.pem").write_bytes(root_crl.public_bytes(serialization.Encoding.PEM))

        def verify(name: str, *flags: str) -> subprocess.CompletedProcess[str]:
            files = ["-CAfile", str(work / "root.pem"), "-untrusted", str(work / "issuing.pem")]
            return subprocess.run(
                ["openssl", "verify", *flags, "-crl_download", *files, str(work / f"{name}.pem")],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )

        for flags in (["-crl_check"], ["-crl_check_all", "-CRLfile", str(work / "root-crl.pem")]):
            good = verify("good", *flags)
            assert good.returncode == 0, good.stdout + good.stderr
            bad = verify("bad", *flags)
            assert bad.returncode != 0 and "certificate revoked" in bad.stdout + bad.stderr


def test_publish_loop_follows_revocations_and_stops_on_sigterm(cli_ca: dict) -> None:
    proc = subprocess.Popen(
        [AGENTCA, "crl", "publish", "--loop", "--poll", "0.1", "--settle", "0.3"],
        env=servers_env(cli_ca),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        work: Path = cli_ca["work"]
        out = work / "loop.pem"
        issued = _cli(cli_ca, *_issue_args(_csr(work / "loop.csr"), **{"--out": str(out)}))
        assert issued.returncode == 0, issued.stderr
        serial = x509.load_pem_x509_certificate(out.read_bytes()).serial_number
        time.sleep(1.0)
        hold = _cli(cli_ca, "revoke", format(serial, "x"), "--reason", "certificateHold")
        assert hold.returncode == 0, hold.stderr
        # a revocation republishes the complete CRL at the distribution point (and a delta)
        full = cli_ca["data_dir"] / "crl" / "issuing.crl"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if full.exists() and serial in revoked_serials(full.read_bytes()):
                break
            time.sleep(0.1)
        assert serial in revoked_serials(full.read_bytes())
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "issuing: full CRL #" in stdout and "issuing: delta CRL #" in stdout


def servers_env(ca: dict) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.pop("SOFTHSM2_CONF", None)
    env["AGENTCA_DATA_DIR"] = str(ca["data_dir"])
    env.update(ca["env"])
    return env
