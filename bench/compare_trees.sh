#!/usr/bin/env bash
# Re-measure the performance figures of two trees back to back, alternating, in one session
# (the machine is shared and noisy: compare within a round, never across sessions).
#
#   bash bench/compare_trees.sh BEFORE_REV [ROUNDS] [OUT_DIR]
#
# BEFORE_REV is exported with `git archive` into a temporary directory; the "after" tree is
# this checkout. Each benchmark runs with PYTHONPATH pointing at one tree (the shared venv
# provides the dependencies), under one throwaway PostgreSQL. Results go to OUT_DIR as
# <bench>-<tree>-<round>.log; docs/performance.md records what they showed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
before_rev=${1:?usage: compare_trees.sh BEFORE_REV [ROUNDS] [OUT_DIR]}
rounds=${2:-2}
out=${3:-var/bench-compare}
py=${PY:-$PWD/.venv/bin/python}
mkdir -p "$out"
before=$(mktemp -d)
trap 'rm -rf "$before"' EXIT
git archive "$before_rev" | tar -x -C "$before"
after=$PWD

run() {  # run NAME TREE ROUND CMD...
    local name=$1 tree=$2 round=$3
    shift 3
    local dir=$before
    [[ $tree == after ]] && dir=$after
    echo "== $name $tree round $round" >&2
    # A fresh database per run: runs must not see each other's hierarchy or schema version.
    local url
    url=$("$py" - "$AGENTCA_TEST_DATABASE_URL" "bench_${name}_${tree}_${round}" <<'PY'
import sys

import sqlalchemy as sa
from sqlalchemy.engine import make_url

base, name = make_url(sys.argv[1]), sys.argv[2]
engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
with engine.connect() as conn:
    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
print(base.set(database=name).render_as_string(hide_password=False))
PY
)
    (cd "$dir" && PYTHONPATH=$dir AGENTCA_TEST_DATABASE_URL=$url AGENTCA_BENCH_DATABASE_URL=$url \
        "$@") >"$out/$name-$tree-$round.log" 2>&1 ||
        echo "   $name $tree round $round failed (see $out/$name-$tree-$round.log)" >&2
}

bench_all() {  # bench_all TREE ROUND
    local tree=$1 round=$2
    run gateway "$tree" "$round" "$py" -m bench.gateway_bench --json
    run ocsp "$tree" "$round" "$py" bench/ocsp_bench.py --duration 6
    run enroll "$tree" "$round" "$py" bench/enroll_bench.py --requests 2500 --seconds 6 \
        --workers 2 --connections 16
    run crl "$tree" "$round" "$py" bench/crl_bench.py --entries 1000000 --reference-entries 20000
    run ledger "$tree" "$round" "$py" bench/ledger_bench.py --entries 200000 --issuances 300
}

export -f run bench_all
export before after out py
bash scripts/with-postgres.sh bash -c "
    for round in \$(seq 1 $rounds); do
        bench_all before \$round
        bench_all after \$round
    done"
echo "results in $out" >&2
