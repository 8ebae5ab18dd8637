#!/usr/bin/env bash
# The bench suite: slow tests, then each benchmark (each prints its metrics and ratios).
# Needs ../shared/data beside the checkout. Results go in bench/RESULTS.md by hand, with the command.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DATA=${LABELFREE_BENCH_DATA:-../shared/data}
$PY -m pytest -q -p no:cacheprovider -m slow
$PY bench/bench_ingest.py --data "$DATA"
$PY bench/bench_classifier.py --help >/dev/null && echo "classifier/explainer/detector/inference benches: see each --help and bench/RESULTS.md for the commands used"
