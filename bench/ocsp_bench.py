"""OCSP responder benchmark: ours (gunicorn, 2 workers) versus ``openssl ocsp`` in one run.

Usage: python bench/ocsp_bench.py [--duration 10] [--connections 32] [--threads 2]
       [--certs 100000] [--cold-seconds 60]

``--certs N`` (default 100,000; 0 skips it) adds the many-certificates scenario of
bench/ocsp_many.py: N distinct issued certificates asked in random order, a cold pass (each
once) and a warm pass, ours and openssl on the same index, with RSS and the per-worker split.

A third row set loads OCSP GET through Debian's nginx running deploy/nginx/agentca.conf (its
RFC 5019 cache, tests/support/nginx.py) in front of our responder, with the cache hit ratio
counted from nginx's access log ($upstream_cache_status).

Both responders answer for the same issuing CA and the same certificates; both are loaded by
wrk with the same request bytes (one SHA-1 CertID, no nonce: the RFC 5019 profile), the same
threads, connections and duration, for POST and GET, with ``Connection: close`` (one request
per connection, which is all ``openssl ocsp -port`` does) and with keep-alive. The script
re-runs itself inside a fresh network namespace (``unshare -n``) where only loopback exists,
because ``openssl ocsp -port`` listens on every interface; the database is reached through
its unix socket. A fresh openssl responder is started per measurement (it spins after its
clients disconnect) and killed afterwards. openssl signs with a software P-256 key whose
delegated responder certificate our issuing CA (HSM key) certifies; ours signs in SoftHSM2.

Database: a fresh database on the server of scripts/with-postgres.sh when
``AGENTCA_TEST_PG_SOCKETDIR`` is set (``make bench-ocsp``), else SQLite in the work dir.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AGENTCA = str(Path(sys.executable).with_name("agentca"))
MODEL = "8f39b1a2cf93e8201a756b1f2304918e7e1f4094a9a01f92e8c21a4f028bde44"
PROMPT = "4e1fa0c31ab456de90123f112ab8e89cf12a023b1ab4c089ee21ff34e098df12"
NO_PROBE = "wrk.resolve = function(host, service) wrk.addrs = wrk.lookup(host, service) end\n"
# (wrk's default resolve() opens and closes a probe connection; a single-process openssl
# responder blocks on it forever, so both servers are loaded without the probe.)


def sh(*cmd: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if check and out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ---------------------------------------------------------------------------------- setup
def database_url(work: Path) -> tuple[str, str | None]:
    """(URL for agentca, database name to drop afterwards or None)."""
    sock = os.environ.get("AGENTCA_TEST_PG_SOCKETDIR")
    port = os.environ.get("AGENTCA_TEST_PG_PORT")
    if not (sock and port):
        return f"sqlite:///{work / 'agentca.sqlite3'}", None
    import sqlalchemy as sa

    name = f"agentca_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(
        f"postgresql+psycopg://postgres@/postgres?host={sock}&port={port}",
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"postgresql+psycopg://postgres@/{name}?host={sock}&port={port}", name


def drop_database(name: str) -> None:
    import sqlalchemy as sa

    sock, port = os.environ["AGENTCA_TEST_PG_SOCKETDIR"], os.environ["AGENTCA_TEST_PG_PORT"]
    admin = sa.create_engine(
        f"postgresql+psycopg://postgres@/postgres?host={sock}&port={port}",
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def prepare(work: Path, env: dict[str, str]) -> dict[str, Any]:
    """A CA, certificates, the openssl responder's material and the request files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import ocsp
    from cryptography.x509.oid import NameOID

    sh(AGENTCA, "init", env=env)
    sh(AGENTCA, "chain", "--root-only", "--out", str(work / "root.pem"), env=env)
    chain = sh(AGENTCA, "chain", env=env)
    (work / "issuing.pem").write_text(chain[: chain.index("-----END CERTIFICATE-----") + 26])
    issuing = x509.load_pem_x509_certificate((work / "issuing.pem").read_bytes())
    index_lines = []
    certs = []
    for i in range(3):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench{i}")]))
            .sign(key, hashes.SHA256())
        )
        (work / f"a{i}.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        sh(
            AGENTCA, "issue", "--csr", str(work / f"a{i}.csr"), "--agent", f"Bench-{i}",
            "--scope", "s", "--model-type", "m", "--model-digest", MODEL,
            "--prompt-digest", PROMPT, "--officer", "o@example.org", "--environment", "bench",
            "--validity", "12h", "--out", str(work / f"a{i}.pem"),
            "--outside-policy",  # raw certificates to answer OCSP for; no registrations here
            env=env,
        )  # fmt: skip
        cert = x509.load_pem_x509_certificate((work / f"a{i}.pem").read_bytes())
        certs.append(cert)
        serial = format(cert.serial_number, "X")
        serial = ("0" if len(serial) % 2 else "") + serial
        expiry = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
        subject = "/" + "/".join(cert.subject.rfc4514_string().split(",")[::-1])
        index_lines.append(f"V\t{expiry}\t\t{serial}\tunknown\t{subject}\n")
    (work / "index.txt").write_text("".join(index_lines))
    # openssl's delegated responder: software key, certified by our issuing CA in the HSM.
    from ca.clock import utcnow
    from ca.config import load_settings
    from ca.profile import BACKDATE
    from ca.responder_certs import build_responder_certificate
    from ca.serials import new_serial
    from ca.wiring import open_runtime

    rs_key = ec.generate_private_key(ec.SECP256R1())
    rt = open_runtime(load_settings(environ=env))
    try:
        issuer_key = rt.keys.get(rt.authority.issuer("issuing").key_label)
        now = utcnow()
        rs_cert = build_responder_certificate(
            rs_key.public_key(), new_serial(), now - BACKDATE, now + timedelta(hours=48),
            issuing, issuer_key,
        )  # fmt: skip
    finally:
        rt.close()
    (work / "rs.pem").write_bytes(rs_cert.public_bytes(serialization.Encoding.PEM))
    (work / "rs.key").write_bytes(
        rs_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    der = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(certs[0], issuing, hashes.SHA1())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    (work / "req.der").write_bytes(der)
    body = "".join(f"\\{b}" for b in der)
    (work / "post.lua").write_text(
        NO_PROBE + 'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/ocsp-request"\n'
        f'wrk.body = "{body}"\n'
    )
    (work / "get.lua").write_text(NO_PROBE)
    return {
        "get_path": "/ocsp/" + urllib.parse.quote(base64.b64encode(der).decode(), safe=""),
        "get_path_openssl": "/" + urllib.parse.quote(base64.b64encode(der).decode(), safe=""),
    }


# ---------------------------------------------------------------------------------- measuring
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(text: str) -> dict[str, Any]:
    def latency(pct: str) -> float | None:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else None

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in [\d.]+\w+, ([\d.]+)(B|KB|MB|GB) read", text)
    size = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
    per_response = (
        float(total.group(2)) * size[total.group(3)] / max(1, int(total.group(1))) if total else 0.0
    )
    errors = re.search(r"Socket errors: (.*)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": errors.group(1) if errors else "",
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "bytes_per_response": per_response,
    }


def run_wrk(url: str, script: Path, close: bool, args: argparse.Namespace) -> dict[str, Any]:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    cmd += ["--latency", "-s", str(script)]
    if close:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=False)
    result = parse_wrk(out.stdout)
    result["command"] = " ".join([*cmd, url])
    return result


def check_good(url: str, der: bytes) -> None:
    from cryptography.x509 import ocsp

    req = urllib.request.Request(
        url, data=der, headers={"Content-Type": "application/ocsp-request"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer = ocsp.load_der_ocsp_response(resp.read())
    if answer.certificate_status is not ocsp.OCSPCertStatus.GOOD:
        raise SystemExit(f"{url} did not answer good")


SCENARIOS = [("POST", True), ("GET", True), ("POST", False), ("GET", False)]


def through_nginx(work: Path, origin: int, get_path: str, args: argparse.Namespace) -> list[Any]:
    """OCSP GET through deploy/nginx/agentca.conf (Debian's nginx, its cache) in front of our
    responder on port ``origin``; each run with its cache hit ratio from the access log."""
    from tests.support.nginx import running_nginx, tls_pair

    runs = []
    for close in (True, False):
        prefix = work / f"nginx-{'close' if close else 'keepalive'}"
        tls = tls_pair(work)
        with running_nginx(prefix, "127.0.0.1:9", f"127.0.0.1:{origin}", tls, "auto") as nginx:
            run = run_wrk(f"http://{nginx.http}{get_path}", work / "get.lua", close, args)
            counts = nginx.cache_statuses("GET")
        total = sum(counts.values())
        run["cache"] = dict(counts)
        run["hit_ratio"] = counts["HIT"] / total if total else 0.0
        runs.append({"server": "nginx", "method": "GET", "close": close, **run})
    return runs


def _start_openssl(work: Path, index: Path, der: bytes) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        ["openssl", "ocsp", "-index", str(index), "-port", str(port),
         "-rsigner", str(work / "rs.pem"), "-rkey", str(work / "rs.key"),
         "-CA", str(work / "issuing.pem"), "-nmin", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            check_good(base + "/", der)
            return proc, base
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)


def many_certificates(
    work: Path, env: dict[str, str], db_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    """The many-certificates scenario (bench/ocsp_many.py): cold and warm, ours and openssl."""
    from dataclasses import asdict

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from bench import ocsp_many

    issuing = x509.load_pem_x509_certificate((work / "issuing.pem").read_bytes())
    started = time.monotonic()
    lines, requests, _ = ocsp_many.seed(
        db_url, issuing.public_bytes(serialization.Encoding.DER), args.certs, work
    )
    index = work / "index-many.txt"
    index.write_text((work / "index.txt").read_text() + lines.read_text())
    out: dict[str, Any] = {"certs": args.certs, "seed_seconds": time.monotonic() - started}
    # the CA side signs every answer ahead of demand into the shared store (decision 0038);
    # without --presign-store the responders sign each cold request on demand, as before
    if args.presign_store:
        started = time.monotonic()
        presign = [AGENTCA, "ocsp", "presign", "--once", "--rate", "0", "--batch", "2000"]
        presigned = json.loads(sh(*presign, "--json", env=env))
        presigned["wall_seconds"] = time.monotonic() - started
        out["presign"] = presigned
    der = (work / "req.der").read_bytes()
    warm_file = work / "many-warm.bin"
    port = free_port()
    # one client address (wrk on loopback): the per-address signing budget would answer
    # tryLater for almost every cold request, so it is off for this server
    ours = subprocess.Popen(
        [AGENTCA, "ocsp", "serve", "--workers", "2", "--port", str(port),
         "--sign-rate-per-client", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(work / "ours-many.log", "w"),  # noqa: SIM115
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/health")
        check_good(base + "/ocsp", der)
        ocsp_many.wait_for_workers(base + "/ocsp", der, 2)  # both booted: a fair split
        # the host's answer map (decision 0050): one worker snapshots the store at start
        out["map_wait_seconds"] = ocsp_many.wait_for_map(
            Path(env["AGENTCA_DATA_DIR"]) / "ocsp-map" / "answers.map"
        )
        time.sleep(1.5)  # every worker looks for a newer map once a second
        pids = ocsp_many.children(ours.pid)
        rss = {"before": [ocsp_many.rss_kb(p) for p in pids]}
        private = {"before": [ocsp_many.private_kb(p) for p in pids]}
        cold = ocsp_many.wrk_pass(base + "/ocsp", requests, args.certs, "cold", args.threads,
                                  args.connections, args.cold_seconds, parse_wrk)  # fmt: skip
        rss["after_cold"] = [ocsp_many.rss_kb(p) for p in pids]
        warm = ocsp_many.wrk_pass(base + "/ocsp", warm_file, args.certs, "warm", args.threads,
                                  args.connections, args.duration, parse_wrk)  # fmt: skip
        rss["after_warm"] = [ocsp_many.rss_kb(p) for p in pids]
        private["after_warm"] = [ocsp_many.private_kb(p) for p in pids]
        time.sleep(1.5)  # workers move their tallies to the counters about once a second
        try:
            out["answers_by_cache"] = ocsp_many.answers_by_cache(base + "/metrics")
        except OSError as exc:
            out["answers_by_cache"] = {"error": str(exc)}
        out["agentca"] = {"cold": asdict(cold), "warm": asdict(warm), "rss_kb": rss,
                          "private_kb": private, "workers": pids}  # fmt: skip
    finally:
        ours.send_signal(signal.SIGTERM)
        ours.wait(20)
    theirs: dict[str, Any] = {}
    for mode, file, seconds in (("cold", requests, args.cold_seconds),
                                ("warm", warm_file, args.duration)):  # fmt: skip
        openssl, base = _start_openssl(work, index, der)
        try:
            before = ocsp_many.rss_kb(openssl.pid)
            run = ocsp_many.wrk_pass(base + "/", file, args.certs, mode, args.threads,
                                     args.connections, seconds, parse_wrk)  # fmt: skip
            theirs[mode] = asdict(run)
            theirs[f"rss_kb_{mode}"] = [before, ocsp_many.rss_kb(openssl.pid)]
        finally:
            openssl.kill()
            openssl.wait(10)
    out["openssl"] = theirs
    return out


def inner(args: argparse.Namespace) -> dict[str, Any]:
    """Everything inside the namespace: setup, our server, openssl, wrk."""
    sh("ip", "link", "set", "lo", "up")
    work = Path(tempfile.mkdtemp(prefix="ocsp-bench-"))
    db_url, db_name = database_url(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.pop("SOFTHSM2_CONF", None)
    env.update(AGENTCA_DATA_DIR=str(work / "data"), AGENTCA_DATABASE_URL=db_url)
    results: dict[str, Any] = {"database": db_url.split(":", 1)[0], "runs": []}
    try:
        paths = prepare(work, env)
        der = (work / "req.der").read_bytes()
        port = free_port()
        ours = subprocess.Popen(
            [AGENTCA, "ocsp", "serve", "--workers", "2", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=open(work / "ours.log", "w"),  # noqa: SIM115
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/health")
            for _ in range(50):  # both workers: cache the answer
                check_good(base + "/ocsp", der)
            from bench.ocsp_many import wait_for_workers

            wait_for_workers(base + "/ocsp", der, 2)
            for method, close in SCENARIOS:
                script = work / ("post.lua" if method == "POST" else "get.lua")
                url = base + ("/ocsp" if method == "POST" else paths["get_path"])
                run = run_wrk(url, script, close, args)
                results["runs"].append({"server": "agentca", "method": method,
                                        "close": close, **run})  # fmt: skip
            from bench.ocsp_many import balance_runs

            results["balance"] = balance_runs(
                base + "/ocsp", der, work, args.balance_runs, 2, parse_wrk
            )
            results["runs"] += through_nginx(work, port, paths["get_path"], args)
        finally:
            ours.send_signal(signal.SIGTERM)
            ours.wait(20)
        for method, close in SCENARIOS:
            port = free_port()
            openssl = subprocess.Popen(
                ["openssl", "ocsp", "-index", str(work / "index.txt"), "-port", str(port),
                 "-rsigner", str(work / "rs.pem"), "-rkey", str(work / "rs.key"),
                 "-CA", str(work / "issuing.pem"), "-nmin", "60"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                base = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 10
                while True:
                    try:
                        check_good(base + "/", der)
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                script = work / ("post.lua" if method == "POST" else "get.lua")
                url = base + ("/" if method == "POST" else paths["get_path_openssl"])
                run = run_wrk(url, script, close, args)
                results["runs"].append({"server": "openssl", "method": method,
                                        "close": close, **run})  # fmt: skip
            finally:
                openssl.kill()
                openssl.wait(10)
        if args.certs > 0:
            results["many"] = many_certificates(work, env, db_url, args)
    finally:
        if db_name:
            drop_database(db_name)
        shutil.rmtree(work, ignore_errors=True)
    return results


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, " + (
        sh("openssl", "version").strip()
    )


def report(results: dict[str, Any], args: argparse.Namespace) -> bool:
    runs = {(r["server"], r["method"], r["close"]): r for r in results["runs"]}
    print(f"machine: {machine()}; database: {results['database']}")
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, one SHA-1 CertID, "
          "no nonce; both responders in one network namespace with only loopback\n")  # fmt: skip
    print(f"{'scenario':28} {'agentca req/s':>14} {'openssl req/s':>14} {'ratio':>7} "
          f"{'our p50':>9} {'our p99':>9} {'ossl p99':>9}")  # fmt: skip
    ok = True
    for method, close in SCENARIOS:
        ours, theirs = runs[("agentca", method, close)], runs[("openssl", method, close)]
        ratio = ours["rps"] / theirs["rps"] if theirs["rps"] else float("inf")
        name = f"{method} {'Connection: close' if close else 'keep-alive'}"
        print(
            f"{name:28} {ours['rps']:14.0f} {theirs['rps']:14.0f} {ratio:7.2f} "
            f"{ours['p50_ms'] or 0:7.2f}ms {ours['p99_ms'] or 0:7.2f}ms "
            f"{theirs['p99_ms'] or 0:7.2f}ms"
        )
        for r in (ours, theirs):
            if r["bytes_per_response"] < 400:  # a signed answer is ~0.8 KB; errors are tiny
                print(f"    {r['server']}: only {r['bytes_per_response']:.0f} bytes/response!")
                ok = False
            if r["errors"] or r["non2xx"]:
                print(f"    {r['server']}: socket errors {r['errors']!r}, non-2xx {r['non2xx']}")
        ok = ok and ratio >= 1.0 and (ours["p99_ms"] or 1e9) < 10.0
    for close in (True, False):
        cached, theirs = runs.get(("nginx", "GET", close)), runs[("openssl", "GET", close)]
        if cached is None:
            continue
        ours = runs[("agentca", "GET", close)]
        name = f"GET via nginx cache, {'close' if close else 'keep-alive'}"
        print(
            f"{name:28} {cached['rps']:14.0f} {theirs['rps']:14.0f} "
            f"{cached['rps'] / theirs['rps'] if theirs['rps'] else 0:7.2f} "
            f"{cached['p50_ms'] or 0:7.2f}ms {cached['p99_ms'] or 0:7.2f}ms "
            f"{theirs['p99_ms'] or 0:7.2f}ms  (x{cached['rps'] / max(ours['rps'], 1):.2f} our "
            f"origin; hit ratio {cached['hit_ratio']:.4%} of {sum(cached['cache'].values())})"
        )
        if cached["errors"] or cached["non2xx"]:
            print(f"    nginx: socket errors {cached['errors']!r}, non-2xx {cached['non2xx']}")
    if results.get("balance"):
        from bench.ocsp_many import shares_text

        splits = results["balance"]
        both = sum(1 for w in splits if len(w) >= 2)
        print(
            f"per-worker split, wrk -t2 -c8 keep-alive (8 connections opened at once), "
            f"{len(splits)} runs of 2 s: "
            + ", ".join(shares_text(w) for w in splits)
            + f" (every worker served in {both} of {len(splits)} runs)"
        )
    print("\ntarget (throughput >= openssl, our p99 < 10 ms):", "met" if ok else "NOT met")
    if "many" in results:
        ok = report_many(results["many"]) and ok
    return ok


def report_many(many: dict[str, Any]) -> bool:
    """The many-certificates rows and their verdict (issue 15's targets)."""
    from bench.ocsp_many import split_text

    ours, theirs = many["agentca"], many["openssl"]
    print(
        f"\nmany certificates: {many['certs']:,} distinct issued certificates in random "
        f"order, one SHA-1 CertID, no nonce (seeded in {many['seed_seconds']:.1f} s)"
    )
    if "presign" in many:
        p = many["presign"]
        print(
            f"shared store: {p['stored']:,} answers pre-signed by 'agentca ocsp presign --once' "
            f"in {p['wall_seconds']:.1f} s ({p['signed'] / max(p['seconds'], 1e-9):.0f}/s)"
        )
    else:
        print("shared store: not filled (--no-presign-store): every cold request is signed")
    print(f"{'pass':10} {'agentca req/s':>14} {'openssl req/s':>14} {'ratio':>7} "
          f"{'our p99':>9} {'ossl p99':>9} {'answers':>9} {'short':>6}")  # fmt: skip
    verdict = True
    for mode, need in (("cold", 1.0), ("warm", 2.0)):
        a, o = ours[mode], theirs[mode]
        capped = "" if a["complete"] else "  (cold pass capped: not all asked)"
        ratio = a["rps"] / o["rps"] if o["rps"] else 0.0
        print(
            f"{mode:10} {a['rps']:14.0f} {o['rps']:14.0f} {ratio:7.2f} "
            f"{a['p99_ms'] or 0:7.2f}ms {o['p99_ms'] or 0:7.2f}ms {a['answered']:9} "
            f"{a['short']:6}{capped}"
        )
        if o["short"] or not o["complete"]:
            print(f"    openssl: {o['short']} short answers, complete={o['complete']}")
        print(f"    per-worker split: {split_text(a['workers'])}")
        verdict = verdict and ratio >= need and (a["p99_ms"] or 1e9) < 10.0 and not a["short"]
        verdict = verdict and a["complete"]
    rss = ours["rss_kb"]
    print("    RSS per worker (MiB) before / after cold / after warm: " + "; ".join(
        f"{b / 1024:.0f} / {c / 1024:.0f} / {w / 1024:.0f}"
        for b, c, w in zip(rss["before"], rss["after_cold"], rss["after_warm"], strict=False)
    ) + f"; openssl {theirs['rss_kb_warm'][1] / 1024:.0f}")  # fmt: skip
    if "private_kb" in ours:
        priv = ours["private_kb"]
        print("    private memory (RssAnon) per worker (MiB) before / after warm: " + "; ".join(
            f"{b / 1024:.0f} / {w / 1024:.0f}"
            for b, w in zip(priv["before"], priv["after_warm"], strict=False)
        ) + f"; answer map ready {many.get('map_wait_seconds', 0):.1f} s after start")  # fmt: skip
    if "answers_by_cache" in many:
        print("    answers by source, both passes (agentca_ocsp_responses_total by cache): "
              + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(many["answers_by_cache"].items())
                          if isinstance(v, float)))  # fmt: skip
    print("target (cold >= openssl, warm >= 2x openssl, p99 < 10 ms):",
          "met" if verdict else "NOT met")  # fmt: skip
    return verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--certs",
        type=int,
        default=100_000,
        help="distinct certificates of the many-certificates scenario (0: skip)",
    )
    parser.add_argument(
        "--cold-seconds", type=int, default=60, help="cap on the many-certificates cold pass"
    )
    parser.add_argument(
        "--presign-store",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fill the shared store of pre-signed answers before the many-certificates "
        "scenario (decision 0038; --no-presign-store: sign every cold request on demand)",
    )
    parser.add_argument(
        "--balance-runs", type=int, default=6, help="wrk runs of 8 connections for the split"
    )
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        Path(args.inner).write_text(json.dumps(inner(args)))
        return
    for tool in ("wrk", "openssl", "unshare", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(
                f"{tool} is needed (apt-get install -y wrk openssl util-linux iproute2)"
            )
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, __file__, "--inner", out.name, "--duration", str(args.duration),
               "--connections", str(args.connections), "--threads", str(args.threads),
               "--certs", str(args.certs), "--cold-seconds", str(args.cold_seconds),
               "--presign-store" if args.presign_store else "--no-presign-store",
               "--balance-runs", str(args.balance_runs)]  # fmt: skip
        for prefix in (["unshare", "-n"], ["unshare", "-r", "-n"]):
            if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
                break
        else:
            raise SystemExit("could not create a private network namespace (unshare -n)")
        if subprocess.run([*prefix, *cmd], check=False).returncode != 0:
            raise SystemExit("the benchmark failed")
        results = json.loads(Path(out.name).read_text())
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    report(results, args)


if __name__ == "__main__":
    main()
