#!/usr/bin/env bash
# Bring this machine and the project venv up to what `make run` / `make test` need.
#
#   scripts/bootstrap.sh [run|test]      (default: run)
#
# Idempotent and silent when everything is already present. Missing Debian packages are
# installed with apt-get (one `apt-get update` first, only when something is missing; sudo
# only when not root). The venv ($VENV, default .venv) is created when missing and
# (re)installed with `pip install -e` when pyproject.toml is newer than its stamp file.
# On failure prints one line starting with "bootstrap: error:" and exits non-zero.
#
# Environment: VENV (venv dir, relative to the repo root or absolute), PYTHON (interpreter
# used to create the venv, default python3).
set -euo pipefail

mode=${1:-run}
case $mode in
    run | test) ;;
    *)
        echo "usage: $0 [run|test]" >&2
        exit 2
        ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

venv=${VENV:-.venv}
python=${PYTHON:-python3}
log=$(mktemp "${TMPDIR:-/tmp}/agentca-bootstrap.XXXXXX")
trap 'rm -f "$log"' EXIT

die() {
    if [[ -s $log ]]; then
        echo "---- last lines of the bootstrap log ----" >&2
        tail -n 25 "$log" >&2
        echo "-----------------------------------------" >&2
    fi
    echo "bootstrap: error: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- system packages
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_glob() { compgen -G "$1" >/dev/null; }

python_ok() {
    have_cmd "$python" &&
        "$python" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' \
            >/dev/null 2>&1
}

missing=()
need() { # need PACKAGE PRESENT-TEST...
    local pkg=$1
    shift
    "$@" || missing+=("$pkg")
}

need make have_cmd make
if ! python_ok; then
    if [[ -z ${PYTHON:-} ]]; then
        missing+=(python3 python3-venv)
    else
        die "PYTHON=$python is not a Python >= 3.11 with the venv module"
    fi
fi
need softhsm2 have_glob '/usr/lib/softhsm/libsofthsm2.so'
need openssl have_cmd openssl
if [[ $mode == test ]]; then
    need postgresql have_glob '/usr/lib/postgresql/*/bin/initdb'
    need postgresql-client have_cmd pg_dump # agentca backup create/restore on PostgreSQL
    need wrk have_cmd wrk
    need procps have_cmd ps
    need faketime have_cmd faketime # clock-skew fault tests (tests/faults/test_clock_skew.py)
    need golang-go have_cmd go        # Go crypto/x509 interop (tests/interop/go)
    need gnutls-bin have_cmd certtool # GnuTLS certtool / ocsptool / gnutls-serv interop
    need nginx have_glob '/usr/sbin/nginx' # deploy/nginx in front of the CA API and OCSP
    need systemd have_cmd systemd-analyze # deploy/systemd units are verified and rated
    need curl have_cmd curl           # the docs test runs the README's and guides' curl commands
    need redis-server have_cmd redis-server # the shared gateway replay cache (issue 16)
    need chromium have_cmd chromium   # the web console's browser tests (issue 19)
    need chromium-driver have_cmd chromedriver
fi

if ((${#missing[@]})); then
    sudo=()
    if ((EUID != 0)); then
        have_cmd sudo || die "need root or sudo to install: ${missing[*]}"
        sudo=(sudo -n)
    fi
    have_cmd apt-get || die "no apt-get on this machine; install by hand: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    echo "bootstrap: installing ${missing[*]} ..." >&2
    "${sudo[@]}" apt-get update -q >>"$log" 2>&1 ||
        die "apt-get update failed (needed for: ${missing[*]})"
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1 ||
        die "apt-get install failed for: ${missing[*]}"
    python_ok || die "$python is still not a Python >= 3.11 with venv after installing"
fi

# ---------------------------------------------------------------- venv
if [[ $mode == test ]]; then
    extras='test,postgres'
    stamps=("$venv/.agentca-stamp-test")
else
    extras='postgres'
    # A test install is a superset of a run install.
    stamps=("$venv/.agentca-stamp-run" "$venv/.agentca-stamp-test")
fi

venv_ok() {
    [[ -x $venv/bin/python ]] &&
        "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

if ! venv_ok; then
    [[ -e $venv ]] && echo "bootstrap: $venv is broken; recreating it" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" >>"$log" 2>&1 || die "cannot create the venv $venv with $python"
    rm -f "$venv"/.agentca-stamp-*
fi

fresh=
for stamp in "${stamps[@]}"; do
    if [[ -e $stamp && ! pyproject.toml -nt $stamp ]]; then
        fresh=$stamp
        break
    fi
done

if [[ -z $fresh ]]; then
    echo "bootstrap: installing the project into $venv ([$extras]) ..." >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]" \
        >>"$log" 2>&1 || die "pip install -e '.[$extras]' failed in $venv"
    touch "${stamps[0]}"
fi

# ---------------------------------------------------------------- OMS reference signer
# model-signing needs pyOpenSSL, which pins cryptography<51: it gets a venv of its own
# (.venv-oms), used only by the tests that have it sign models (decision 0052)
if [[ $mode == test ]]; then
    PYTHON=$python bash scripts/oms-reference-venv.sh || die "scripts/oms-reference-venv.sh failed"
fi
