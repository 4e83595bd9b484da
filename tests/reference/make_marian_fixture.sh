#!/usr/bin/env bash
# Writes a Marian parity fixture with the PyTorch reference (tests/reference/marian_reference.py):
#   make_marian_fixture.sh OUT SHAPE LAYOUT [RANDOM_CASES] [MAX_LENGTH]
# OUT/model (a random checkpoint in Hugging Face layout), OUT/reference.json and
# OUT/reference.safetensors (expected outputs), OUT/tokenize.json (tokenizer expectations).
# A fixture newer than the reference script is reused.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=${ROSETTA_PYTHON:-/usr/bin/python3}
out=$1 shape=$2 layout=$3 random_cases=${4:-40} max_length=${5:-256}
script=$here/marian_reference.py
if [[ -f $out/complete && $out/complete -nt $script ]]; then
  echo "fixture $out is up to date"
  exit 0
fi
rm -rf "$out"
mkdir -p "$out"
start=$(date +%s)
"$py" "$script" make-checkpoint --out "$out/model" --shape "$shape" --seed 1 --layout "$layout"
"$py" "$script" run --model "$out/model" --out-json "$out/reference.json" \
  --out-tensors "$out/reference.safetensors" --threads 2 --num-random "$random_cases" \
  --max-length "$max_length"
{
  head -n 40 "${ROSETTA_TESTSETS:-$here/../../../shared/data/testsets}/flores200-devtest/eng_Latn.devtest"
  cat "$here/tokenizer_texts.txt"
} > "$out/texts.txt"
"$py" "$script" tokenize --model "$out/model" --texts "$out/texts.txt" --out-json "$out/tokenize.json"
touch "$out/complete"
echo "fixture $out ($shape, $layout) written in $(( $(date +%s) - start )) s"
