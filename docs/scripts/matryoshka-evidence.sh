#!/usr/bin/env bash
# Matryoshka evidence on stories260K (docs/training.md, "Matryoshka embeddings"): one epoch of contrastive training on
# the 2,943 SNLI triplets with and without --matryoshka-dims, then STS-B Spearman at 64 (full), 16 (1/4) and 8 (1/8)
# dimensions with `ullme eval --dimensions`. Nothing is written into the repository.
#
#   docs/scripts/matryoshka-evidence.sh [work-folder]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${ULLME_ASSETS:-$REPO/../shared}
WORK=${1:-/tmp/ullme-matryoshka-evidence}
mkdir -p "$WORK"
dotnet build "$REPO/src/Ullme.Cli" -c Release -o "$WORK/cli" -v q -nologo
CLI=(dotnet "$WORK/cli/ullme.dll")
COMMON=(-m "$SHARED/models/stories260K" --data "$SHARED/data/snli/triplets.jsonl" --strategy contrastive --full --lr 1e-3
        --epochs 1 --batch-size 32 --max-length 64 --threads 2 --no-plot --overwrite)
"${CLI[@]}" train "${COMMON[@]}" --output "$WORK/plain"
"${CLI[@]}" train "${COMMON[@]}" --output "$WORK/matryoshka" --matryoshka-dims 64,16,8
for model in base plain matryoshka; do
  folder="$WORK/$model"; [[ $model == base ]] && folder="$SHARED/models/stories260K"
  for d in 64 16 8; do
    "${CLI[@]}" eval --model "$folder" --tasks STSBenchmark --data-dir "$SHARED/data" --dimensions $d \
      --output "$WORK/results-$model-$d" --threads 2 2>&1 | grep -E "validation" | sed "s/^/$model d=$d /"
  done
done
