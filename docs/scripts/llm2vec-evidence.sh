#!/usr/bin/env bash
# LLM2Vec's recipe on stories260K (docs/training.md, "LLM2Vec's unsupervised stages"): the base model causal and
# bidirectional, then MNTP, MNTP + unsupervised SimCSE, and supervised contrastive training on top, each scored by
# STS-B dev cosine Spearman (mean pooling, `ullme eval`). The unlabelled text is the STS-B *train* sentences (scores
# unused); the supervised stage is one epoch of the 2,943 SNLI triplets. Nothing is written into the repository.
#
#   docs/scripts/llm2vec-evidence.sh [work-folder]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${ULLME_ASSETS:-$REPO/../shared}
WORK=${1:-/tmp/ullme-llm2vec-evidence}
mkdir -p "$WORK"
dotnet build "$REPO/src/Ullme.Cli" -c Release -o "$WORK/cli" -v q -nologo
CLI=(dotnet "$WORK/cli/ullme.dll")
BASE="$SHARED/models/stories260K"
# Unlabelled text: both sentences of every STS-B train pair, first occurrence kept (10,566 texts).
awk -F'\t' 'NF>=7 {print $6; print $7}' "$SHARED/data/stsbenchmark/sts-train.csv" | awk '!seen[$0]++' > "$WORK/texts.txt"
COMMON=(--full --lr 1e-3 --batch-size 32 --max-length 64 --threads 2 --no-plot --overwrite)
train() { "${CLI[@]}" train "$@" "${COMMON[@]}" 2>&1 | grep -E "^done|^error" | sed "s|^|  |"; }

echo "MNTP (300 steps), SimCSE (200 steps), supervised contrastive (1 epoch)…"
train -m "$BASE" --strategy mntp --data "$WORK/texts.txt" --steps 300 --output "$WORK/mntp"
train --from "$WORK/mntp" --strategy simcse --data "$WORK/texts.txt" --steps 200 --output "$WORK/mntp-simcse"
train -m "$BASE" --attention bidirectional --pooling mean --strategy simcse --data "$WORK/texts.txt" --steps 200 --output "$WORK/simcse"
SUPERVISED=(--strategy contrastive --data "$SHARED/data/snli/triplets.jsonl" --epochs 1 --attention bidirectional --pooling mean)
train -m "$BASE" "${SUPERVISED[@]}" --output "$WORK/supervised"
train --from "$WORK/mntp" "${SUPERVISED[@]}" --output "$WORK/mntp-supervised"
train --from "$WORK/mntp-simcse" "${SUPERVISED[@]}" --output "$WORK/mntp-simcse-supervised"

score() {  # model-folder attention label
  local s
  s=$("${CLI[@]}" eval --model "$1" --tasks STSBenchmark --data-dir "$SHARED/data" --attention "$2" --pooling mean \
      --output "$WORK/results-$3" --threads 2 2>&1 | grep -E "validation" | awk -F'│' '{gsub(/ /,"",$6); print $6}')
  printf '| %s | %s | %s |\n' "$3" "$2" "$s"
}
echo
echo "| model | attention | STS-B dev Spearman ×100 |"
echo "|---|---|---:|"
score "$BASE" causal "stories260K"
score "$BASE" bidirectional "stories260K"
score "$WORK/mntp" bidirectional "MNTP"
score "$WORK/simcse" bidirectional "SimCSE (no MNTP)"
score "$WORK/mntp-simcse" bidirectional "MNTP + SimCSE"
score "$WORK/supervised" bidirectional "supervised (no MNTP)"
score "$WORK/mntp-supervised" bidirectional "MNTP + supervised"
score "$WORK/mntp-simcse-supervised" bidirectional "MNTP + SimCSE + supervised"
