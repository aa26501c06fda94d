#!/usr/bin/env bash
# The bench environment: .venv-bench layers TRL (the peer) over .venv, so TRL never becomes a runtime
# dependency of purerl and both sides run the same torch, transformers and rewards code.
set -euo pipefail
BASE=${1:-.venv}
OUT=${2:-.venv-bench}
PY=$BASE/bin/python
site=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$OUT"
$PY -m venv --without-pip "$OUT"
out_site=$("$OUT/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$(cd "$site" && pwd)" > "$out_site/_purerl_base.pth"   # .venv's packages, after the bench's own
# pip from .venv installs into the bench prefix; packages already in .venv count as installed
$PY -m pip install --quiet --prefix "$OUT" "trl==1.16.0"
"$OUT/bin/python" -c 'import trl, transformers, torch; print("bench env: trl", trl.__version__, "torch", torch.__version__)'
