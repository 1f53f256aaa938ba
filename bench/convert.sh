#!/usr/bin/env bash
# Conversion throughput and memory on a 1.8b-shaped model (24 layers, hidden 2048, ffn 7168,
# 16 heads, vocab 99584; 3.7 GB bf16), against a plain copy of the same bytes in the same run.
#
#   bench/convert.sh [WORKDIR]      (default /tmp/llmjp-bench; the model is kept there for reuse)
#
# Environment: REPS (default 3), OUTTYPES (default "f16 auto q8_0"), RESULTS (default
# bench/results.txt; the table is also printed), OUTDIR (the outputs go to OUTDIR/llmjp-bench-out,
# default WORKDIR/llmjp-bench-out; OUTDIR=/dev/shm puts them on tmpfs, which takes the disk out of the
# comparison and shows the CPU-bound case, as on a machine with a fast NVMe disk).
#
# What is measured, each REPS times, alternating (copy, f16, auto, q8_0, copy, f16, ...) so that
# drift in the machine's load hits every case alike:
#   copy  `dd if=model.safetensors of=copy.bin bs=8M conv=fsync`: read() the input in 8 MiB
#         blocks, write() them to a new file, fsync it at the end. That is the least any
#         converter can do with these bytes: it has to read the input, write an output of (for
#         f16) the same size, and, like ours, sync it before calling it done. dd is used rather
#         than cp because cp may use copy_file_range / reflinks, which on some file systems copy
#         nothing at all; dd moves every byte through user space as we do.
#   f16   `llmjp-convert to-gguf DIR -o OUT --outtype f16 -q`  (bf16 -> f16: the acceptance case)
#   auto  the same with --outtype auto (bf16 -> bf16: a copy with a GGUF header and Q/K permute)
#   q8_0  the same with --outtype q8_0 (output about half the size)
# The input is read once before the first run so the page cache is warm for every case.
# Wall time and peak RSS come from GNU time (`/usr/bin/time -f '%e %M %U %S'`). The table shows
# the median of the REPS wall times, that median over the copy's median, the largest peak RSS,
# and the median user+system CPU seconds.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${1:-/tmp/llmjp-bench}
REPS=${REPS:-3}
OUTTYPES=${OUTTYPES:-"f16 auto q8_0"}
RESULTS=${RESULTS:-$ROOT/bench/results.txt}
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "GNU time is missing: apt-get install -y time" >&2; exit 1; }

cargo build --release -q
BIN=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/llmjp-convert
[ -x "$BIN" ] || BIN=$ROOT/target/release/llmjp-convert

mkdir -p "$WORK"
MODEL=$WORK/model-1.8b
if [ ! -f "$MODEL/model.safetensors" ] && [ ! -f "$MODEL/model.safetensors.index.json" ]; then
    echo "generating the 1.8b model in $MODEL ..." >&2
    "$BIN" synth 1.8b -o "$MODEL" --force -q
fi
INPUT=$MODEL/model.safetensors
[ -f "$INPUT" ] || { echo "$INPUT: expected a single-file checkpoint" >&2; exit 1; }
IN_BYTES=$(stat -c %s "$INPUT")

OUT=${OUTDIR:-$WORK}/llmjp-bench-out
rm -rf "$OUT"
mkdir -p "$OUT"
LOG=$OUT/times.log
: >"$LOG"
cleanup() { rm -rf "$OUT"; }
trap cleanup EXIT

echo "warming the page cache ..." >&2
cat "$MODEL"/* >/dev/null

# run NAME CMD...: one timed run, appended to $LOG as "NAME wall maxrss_kib user sys".
run() {
    local name=$1; shift
    rm -f "$OUT"/copy.bin "$OUT"/out.gguf "$OUT"/out.gguf.sha256
    sync
    "$TIME" -f '%e %M %U %S' -o "$OUT/time.txt" "$@" >/dev/null
    local t
    t=$(tail -n 1 "$OUT/time.txt")
    echo "$name $t" >>"$LOG"
    echo "  $name: $t (wall s, max RSS KiB, user s, sys s)" >&2
}

for i in $(seq 1 "$REPS"); do
    echo "round $i/$REPS" >&2
    run copy dd if="$INPUT" of="$OUT/copy.bin" bs=8M conv=fsync status=none
    for ty in $OUTTYPES; do
        run "$ty" "$BIN" to-gguf "$MODEL" -o "$OUT/out.gguf" --outtype "$ty" -q
    done
done
rm -f "$OUT"/copy.bin "$OUT"/out.gguf "$OUT"/out.gguf.sha256

python3 - "$LOG" "$IN_BYTES" "$RESULTS" "$REPS" "$OUT" <<'EOF'
import statistics, sys, subprocess
log, in_bytes, results, reps, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rows = {}
for line in open(log):
    name, wall, rss, user, sys_ = line.split()
    rows.setdefault(name, []).append((float(wall), int(rss), float(user) + float(sys_)))
copy = statistics.median(w for w, _, _ in rows["copy"])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
out_fs = subprocess.run(["df", "--output=fstype,source", out_dir], capture_output=True, text=True).stdout.split()[-2:]
lines = [
    f"outputs to {out_dir} ({' on '.join(out_fs)})",
    f"input {in_bytes / 1e9:.2f} GB bf16 (1.8b preset); {nproc} cores, {cpu}; median of {reps}",
    f"{'case':<6} {'wall s':>7} {'min-max':>11} {'x copy':>7} {'peak RSS MiB':>13} {'cpu s':>6}",
]
for name, rs in rows.items():
    walls = [w for w, _, _ in rs]
    med = statistics.median(walls)
    lines.append(
        f"{name:<6} {med:7.2f} {min(walls):5.2f}-{max(walls):<5.2f} {med / copy:7.2f} "
        f"{max(r for _, r, _ in rs) / 1024:13.0f} {statistics.median(c for _, _, c in rs):6.2f}"
    )
text = "\n".join(lines) + "\n"
print(text, end="")
open(results, "w").write(text)
EOF
