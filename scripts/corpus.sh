#!/usr/bin/env bash
# corpus.sh -- build (or reuse) the real-image corpus outside the repo.
# The corpus builder lives in the workplace's shared/ folder beside this repo.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
for cand in "${D4C_CORPUS_SCRIPT:-}" "$src/../shared/corpus/make-corpus.sh" /work/shared/corpus/make-corpus.sh; do
  [[ -n $cand && -f $cand ]] && { exec bash "$cand" "$@"; }
done
echo "corpus.sh: make-corpus.sh not found (expected ../shared/corpus/make-corpus.sh)" >&2
exit 1
