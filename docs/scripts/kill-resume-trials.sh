#!/usr/bin/env bash
# Kill -9 at random moments of `ullme train`, then `--resume`: the final model.safetensors must be byte-identical to
# an uninterrupted run and losses.csv identical in every column but the wall-clock ones (samples_per_s, elapsed_s);
# no temporary folder may be left, every checkpoint left must validate against its manifest, and the checkpoint
# the resume starts from must validate (docs/reliability.md, "Faults").
#
#   docs/scripts/kill-resume-trials.sh [trials] [work-folder]      (default 20, /tmp/ullme-kill-trials)
#
# Each trial draws its moment at random: half are a SIGKILL after a uniformly random delay in [0, T] (T = the
# uninterrupted run's wall time, so it lands in start-up, a step, a checkpoint write or the export), half use the
# TEST-ONLY hook ULLME_TEST_KILL_AT=<phase>:<n> (random phase of checkpoint-files, checkpoint-commit, checkpoint-swap,
# checkpoint-prune, step, export-staging, export-publish, export-checkpoints; random n), which hits the short
# windows a random delay rarely does. CLI: $CLI (default: the Release build in src/Ullme.Cli/bin). Seed: $SEED.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${ULLME_ASSETS:-$REPO/../shared}
TRIALS=${1:-20}
WORK=${2:-/tmp/ullme-kill-trials}
CLI=${CLI:-dotnet $REPO/src/Ullme.Cli/bin/Release/net10.0/ullme.dll}
RANDOM=${SEED:-14}
rm -rf "$WORK"; mkdir -p "$WORK"
head -24 "$SHARED/data/snli/triplets.jsonl" > "$WORK/d.jsonl"
ARGS=(train -m "$SHARED/models/stories260K" --data "$WORK/d.jsonl" --strategy grl --steps 6 --batch-size 4 --max-length 32
      --lora-rank 4 --lora-dropout 0.1 --lr 5e-3 --seed 3 --checkpoint-every 1 --threads 1 --no-plot)
losses() { python3 -c "
import csv,sys
r=list(csv.reader(open(sys.argv[1]))); k=[i for i,h in enumerate(r[0]) if h not in ('samples_per_s','elapsed_s')]
print('\n'.join(','.join(row[i] for i in k) for row in r))" "$1"; }
valid() { python3 -c "
import hashlib,json,os,sys
d=sys.argv[1]; m=json.load(open(os.path.join(d,'manifest.json')))
ok=all(os.path.getsize(os.path.join(d,f['path']))==f['length'] and hashlib.sha256(open(os.path.join(d,f['path']),'rb').read()).hexdigest()==f['sha256'] for f in m['files'])
sys.exit(0 if ok else 1)" "$1" 2>/dev/null; }

start=$(date +%s.%N)
$CLI "${ARGS[@]}" --output "$WORK/whole" > "$WORK/whole.log" 2>&1 || { echo "reference run failed"; cat "$WORK/whole.log"; exit 1; }
T=$(python3 -c "print($(date +%s.%N)-$start)")
echo "reference: ${T}s"
PHASES=(checkpoint-files checkpoint-commit checkpoint-swap checkpoint-prune step export-staging export-publish export-checkpoints)
pass=0
for ((i = 1; i <= TRIALS; i++)); do
  out="$WORK/t$i"; log="$WORK/t$i.log"
  if (( RANDOM % 2 )); then
    delay=$(python3 -c "import random; random.seed($RANDOM); print(round(random.uniform(0, $T), 2))")
    moment="after ${delay}s"
    $CLI "${ARGS[@]}" --output "$out" > "$log" 2>&1 & pid=$!
    sleep "$delay"; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  else
    phase=${PHASES[RANDOM % ${#PHASES[@]}]}
    case $phase in step|checkpoint-files|checkpoint-commit|checkpoint-prune) n=$((RANDOM % 6 + 1)) ;; *) n=1 ;; esac
    moment="$phase:$n"
    ULLME_TEST_KILL_AT="$moment" $CLI "${ARGS[@]}" --output "$out" > "$log" 2>&1
  fi
  # What the kill left: the newest checkpoint the resume may take must validate (checked independently here).
  state="partial model: no"; [[ -f "$out/model.safetensors" ]] && { cmp -s "$out/model.safetensors" "$WORK/whole/model.safetensors" && state="complete model present" || state="PARTIAL MODEL"; }
  $CLI "${ARGS[@]}" --output "$out" --resume >> "$log.resume" 2>&1; rc=$?
  from=$(grep -o 'Resuming from step [0-9]*' "$log.resume" | grep -o '[0-9]*$' || echo "-")
  ok=1; why=""
  [[ $rc == 0 ]] || { ok=0; why+=" resume-exit-$rc"; }
  cmp -s "$out/model.safetensors" "$WORK/whole/model.safetensors" || { ok=0; why+=" model-differs"; }
  [[ "$(losses "$out/losses.csv")" == "$(losses "$WORK/whole/losses.csv")" ]] || { ok=0; why+=" losses-differ"; }
  [[ $state == "PARTIAL MODEL" ]] && { ok=0; why+=" partial-model"; }
  left=$(ls -a "$WORK" | grep -E "^\.t$i\." ; ls -a "$out/checkpoints" | grep -E '\.tmp-|\.superseded-')
  [[ -z "$left" ]] || { ok=0; why+=" left:$left"; }
  for c in "$out"/checkpoints/checkpoint-*; do valid "$c" || { ok=0; why+=" invalid:$(basename "$c")"; }; done
  (( ok )) && pass=$((pass + 1))
  printf 'trial %2d  kill %-22s  resumed from %-2s  %-22s  %s\n' "$i" "$moment" "$from" "$state" "$( (( ok )) && echo identical || echo "FAIL$why")"
done
echo "$pass of $TRIALS trials identical to the uninterrupted run"
(( pass == TRIALS ))
