#!/usr/bin/env bash
# Writes a BERT embedding parity fixture with the PyTorch reference (tests/reference/bert_reference.py):
#   make_bert_fixture.sh OUT SHAPE LAYOUT POOLING
# OUT/model (a random checkpoint in Hugging Face layout), OUT/reference.json (texts and their ids)
# and OUT/reference.safetensors (final states and pooled embeddings). A fixture newer than the
# reference scripts is reused.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=${ROSETTA_PYTHON:-/usr/bin/python3}
out=$1 shape=$2 layout=$3 pooling=$4
shared=${ROSETTA_SHARED:-$here/../../../shared}
if [[ -f $out/complete && $out/complete -nt $here/bert_reference.py &&
      $out/complete -nt $here/bert_tokenizer_reference.py ]]; then
  echo "fixture $out is up to date"
  exit 0
fi
rm -rf "$out"
mkdir -p "$out"
start=$(date +%s)
"$py" "$here/bert_reference.py" make-checkpoint --out "$out/model" --shape "$shape" --seed 1 \
  --vocab "$shared/models/bert-vocab/vocab.txt" --layout "$layout" --pooling "$pooling"
"$py" "$here/bert_reference.py" run --model "$out/model" --out-json "$out/reference.json" \
  --out-tensors "$out/reference.safetensors" --threads 2 \
  --texts "$shared/data/testsets/flores200-devtest/eng_Latn.devtest" "$here/wordpiece_texts.json"
touch "$out/complete"
echo "fixture $out ($shape, $layout, $pooling) written in $(( $(date +%s) - start )) s"
