#!/usr/bin/env bash
# make demo: calibrate the simulated rig, capture a twin scene, build its depth map, score, report.
# usage: tools/demo.sh PYTHON ROOT SCENE
set -euo pipefail
PY=${1:-.venv/bin/python}; ROOT=${2:-demo}; SCENE=${3:-kitchen01}
ZEDD="$(dirname "$PY")/zedd"
[ -x "$ZEDD" ] || ZEDD="zedd_via_python"
zedd_via_python() { "$PY" -m zedd_capture "$@"; }
mkdir -p "$ROOT"
step() { echo; echo "=== $*"; }
start=$(date +%s)
step "1/6 rig";                 "$ZEDD" rig show sim
step "2/6 calibration";         "$ZEDD" calibrate-intrinsics --root "$ROOT"   # first: focus and extrinsic use it
                                "$ZEDD" calibrate-focus --root "$ROOT"
                                "$ZEDD" calibrate-breathing --root "$ROOT"
                                "$ZEDD" calibrate-extrinsics --root "$ROOT"
step "3/6 capture $SCENE";      "$ZEDD" capture --scene "$SCENE" --root "$ROOT" --yes
step "4/6 build-depth";         "$ZEDD" build-depth --scene "$SCENE" --root "$ROOT"
step "5/6 validate + eval";     "$ZEDD" validate "$ROOT/scenes/$SCENE/zedd"
                                "$ZEDD" eval-model --data "$ROOT/scenes/$SCENE/zedd" --model dfd-classic --out "$ROOT/scenes/$SCENE/eval/dfd-classic"
if [ -n "${FOSSA_CHECKPOINT:-}" ]; then
                                "$ZEDD" eval-model --data "$ROOT/scenes/$SCENE/zedd" --model fossa-vits --checkpoint "$FOSSA_CHECKPOINT" --out "$ROOT/scenes/$SCENE/eval/fossa-vits"
fi
step "6/6 report";              "$ZEDD" report --scene "$SCENE" --root "$ROOT"
echo; echo "demo finished in $(( $(date +%s) - start )) s; report: $ROOT/scenes/$SCENE/report/index.html"
