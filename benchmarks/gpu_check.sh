#!/usr/bin/env bash
# Turns a lent GPU into numbers in minutes: one JSON-lines file of every speed check (docs/speed.md).
#
#   benchmarks/gpu_check.sh                      # on a GPU machine, from the repository root: < 8 min
#   benchmarks/gpu_check.sh --out=gpu.jsonl      # where the JSON lines go (default gpu_check.jsonl)
#   benchmarks/gpu_check.sh --dry-run            # tiny sizes, any machine (CI: tests/test_gpu_check.py)
#
# Without a GPU (no working nvidia-smi) it runs the dry run by itself. On a GPU it installs the CUDA
# JAX wheel if JAX does not see the GPU (pip install -U "jax[cuda12]"), then runs, each under its own
# time limit: the device-sensitive tests (exactness: 1 vs 4 devices where there are 4, members vs
# single runs, scan vs step loops, kill -9 resume), the single-run benchmark at batch 128 / 1024 / 8192
# against the plain loop (both loop forms), the 16-member sweep against 16 single runs, and the IWAE
# estimate against its matmul bound. Every line of the output has "check": the part it came from;
# each part ends with a {"check": ..., "rc": ..., "wall_s": ...} line. The exit status is 1 if a
# part failed (the others still ran), 2 for a bad argument. PYTHON picks the interpreter.
set -uo pipefail

PY=${PYTHON:-python}
OUT=gpu_check.jsonl
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --out=*) OUT=${arg#--out=} ;;
    *) echo "error: unknown argument '$arg'; use --dry-run and/or --out=PATH" >&2; exit 2 ;;
  esac
done
if [ "$DRY" = 0 ] && ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no GPU here (nvidia-smi); running the dry run" >&2
  DRY=1
fi
: >"$OUT" || { echo "error: cannot write --out=$OUT; pick a writable path" >&2; exit 2; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILED=0

# emit CHECK JSON_FILE: each line of the file, tagged with the check, appended to $OUT.
emit() {
  "$PY" -c '
import json, sys
check, path, out = sys.argv[1:]
with open(path) as f, open(out, "a") as o:
  for line in f:
    line = line.strip()
    if line.startswith("{"):
      o.write(json.dumps({"check": check, **json.loads(line)}) + "\n")
' "$1" "$2" "$OUT"
}

# part CHECK SECONDS COMMAND...: runs COMMAND (which writes JSON lines to $TMP/CHECK.jsonl) under a
# time limit, appends its lines and then its status line to $OUT.
part() {
  local check=$1 limit=$2 start=$EPOCHREALTIME rc
  shift 2
  : >"$TMP/$check.jsonl"
  timeout "$limit" "$@" >"$TMP/$check.log" 2>&1
  rc=$?
  if [ ! -s "$TMP/$check.jsonl" ]; then  # No JSON of its own (pytest): its last line, as a summary.
    "$PY" -c 'import json, sys; print(json.dumps({"summary": (open(sys.argv[1]).read().strip().splitlines() or [""])[-1]}))' \
      "$TMP/$check.log" >"$TMP/$check.jsonl"
  fi
  emit "$check" "$TMP/$check.jsonl"
  "$PY" -c 'import json, sys; print(json.dumps({"check": sys.argv[1], "rc": int(sys.argv[2]),
    "wall_s": round(float(sys.argv[3]), 1), "log_tail": open(sys.argv[4]).read()[-400:] if int(sys.argv[2]) else ""}))' \
    "$check" "$rc" "$(awk "BEGIN {print $EPOCHREALTIME - $start}")" "$TMP/$check.log" >>"$OUT"
  if [ "$rc" != 0 ]; then
    FAILED=1
    echo "gpu_check: $check failed (exit $rc); its log's end is in $OUT" >&2
  else
    echo "gpu_check: $check done" >&2
  fi
}

backend() { "$PY" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo none; }

if [ "$DRY" = 0 ] && [ "$(backend)" != gpu ]; then
  echo "gpu_check: JAX does not see the GPU; installing the CUDA wheel" >&2
  timeout 120 "$PY" -m pip install -q -U "jax[cuda12]" >"$TMP/pip.log" 2>&1
  if [ "$(backend)" != gpu ]; then
    "$PY" -c 'import json, sys; print(json.dumps({"check": "install", "rc": 1, "log_tail": open(sys.argv[1]).read()[-400:]}))' \
      "$TMP/pip.log" >>"$OUT"
    echo "error: JAX still does not see the GPU after pip install -U \"jax[cuda12]\" (see $OUT); install a CUDA jaxlib by hand" >&2
    exit 1
  fi
fi

cat >"$TMP/device.py" <<'EOF'
import json, sys
from benchmarks import harness
print(json.dumps({**harness.device_info(), "dry_run": sys.argv[1] == "1"}))
EOF
part device 30 sh -c "PYTHONPATH=. '$PY' '$TMP/device.py' $DRY >'$TMP/device.jsonl'"

# The device-sensitive tests: exactness across devices, members, loop forms and resume.
TESTS=(tests/test_train.py tests/test_checkpoints.py -k
       "one_and_four_devices or bitwise_alike or single_runs or chunking or resume")
if [ "$DRY" = 1 ]; then
  part tests 120 "$PY" -m pytest -q --collect-only "${TESTS[@]}"
  part benchmark 240 "$PY" -m benchmarks.benchmark --quick --family=vae --loop=scan,step --out="$TMP/benchmark.jsonl"
  part sweep 240 "$PY" -m benchmarks.benchmark_sweep --quick --part=throughput --out="$TMP/sweep.jsonl"
  part eval 240 "$PY" -m benchmarks.benchmark_eval --quick --out="$TMP/eval.jsonl"
else  # Limits: 30 + 90 + 120 + 70 + 40 s, and the install's 120 s: under 8 min in all.
  part tests 90 "$PY" -m pytest -q -x "${TESTS[@]}"
  part benchmark 120 "$PY" -m benchmarks.benchmark --family=vae --batch_size=128,1024,8192 --loop=scan,step \
    --steps=100 --repeats=5 --num_examples=60000 --out="$TMP/benchmark.jsonl"
  part sweep 70 "$PY" -m benchmarks.benchmark_sweep --part=throughput --members=16 --widths=400 --repeats=5 \
    --out="$TMP/sweep.jsonl"
  part eval 40 "$PY" -m benchmarks.benchmark_eval --out="$TMP/eval.jsonl"
fi
echo "gpu_check: wrote $OUT" >&2
exit "$FAILED"
