#!/usr/bin/env bash
# Make .venv-oms: a throwaway venv holding the `model-signing` reference signer (tests only).
#
#   scripts/oms-reference-venv.sh        (idempotent; silent when the venv is already there)
#
# model-signing's package __init__ imports pyOpenSSL, and pyOpenSSL pins cryptography<51,
# while agentca runs cryptography 51. So the reference signer gets its own venv, which the
# tests (tests/interop/test_oms_signatures.py) call in a subprocess; the project venv is never
# downgraded. Environment: OMS_VENV (default .venv-oms at the repo root), PYTHON (default
# python3). On failure prints one line starting with "oms-reference-venv: error:".
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv=${OMS_VENV:-.venv-oms}
python=${PYTHON:-python3}
stamp=$venv/.agentca-oms-stamp
packages=('cryptography<51' 'pyopenssl' 'model-signing>=1.1,<2')

if [[ -e $stamp && -x $venv/bin/python ]] &&
    "$venv/bin/python" -c 'import model_signing' >/dev/null 2>&1; then
    exit 0
fi
log=$(mktemp "${TMPDIR:-/tmp}/agentca-oms-venv.XXXXXX")
trap 'rm -f "$log"' EXIT
die() {
    tail -n 20 "$log" >&2 || true
    echo "oms-reference-venv: error: $*" >&2
    exit 1
}
echo "oms-reference-venv: making $venv with ${packages[*]} ..." >&2
rm -rf "$venv"
"$python" -m venv "$venv" >>"$log" 2>&1 || die "cannot create the venv $venv with $python"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "${packages[@]}" >>"$log" 2>&1 ||
    die "pip install ${packages[*]} failed in $venv"
"$venv/bin/python" -c 'import model_signing' >>"$log" 2>&1 || die "model_signing does not import"
touch "$stamp"
