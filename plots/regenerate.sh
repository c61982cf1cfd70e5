#!/usr/bin/env bash
# Redraw every committed figure in plots/ with the README's own commands (run from the checkout,
# after the README's install command). Intermediate folders go to runs/ (not committed).
# Usage: bash plots/regenerate.sh [FLOWMOE]   (default .venv/bin/flowmoe)
set -euo pipefail
F=${1:-.venv/bin/flowmoe}
mkdir -p runs
rm -rf runs/paper-fig1 runs/prune runs/portrait-pair runs/portrait-m3 runs/portrait-fig1 runs/fig1-sgd-vs-ode

"$F" run --out runs/paper-fig1 --quiet
cp runs/paper-fig1/alignment.png plots/paper-fig1-alignment.png
cp runs/paper-fig1/alignment.svg plots/paper-fig1-alignment.svg
"$F" plot loss runs/paper-fig1 --matching final --out plots/paper-fig1-loss
"$F" prune runs/paper-fig1 --rule oracle --out runs/prune --quiet
cp runs/prune/finetune.png plots/paper-fig1-finetune.png
cp runs/prune/finetune.svg plots/paper-fig1-finetune.svg

"$F" portrait "--starts=-0.9,0.05;-0.5,0.15;0,0.3;0.5,0.5;-0.3,-0.4;0.6,-0.2;-0.8,-0.9" --out runs/portrait-pair --quiet
"$F" plot portrait runs/portrait-pair --out plots/portrait-pair
"$F" portrait --reduction symmetric --students 3 --out runs/portrait-m3 --quiet
"$F" plot portrait runs/portrait-m3 --out plots/portrait-symmetric-m3
"$F" portrait --preset paper-fig1 --t-end 40 --out runs/portrait-fig1 --quiet
"$F" plot portrait runs/portrait-fig1 --out plots/portrait-paper-fig1-slice

"$F" compare --preset paper-fig1 --method online-sgd population-gd --lr 0.01 --batch 1000 --t-end 40 \
    --out runs/fig1-sgd-vs-ode --figure plots/fig1-sgd-vs-ode
if [ -d runs/scaling-d ] || [ "${FLOWMOE_SCALING:-0}" = 1 ]; then  # the d-sweep takes minutes: opt in
    "$F" verify --scaling d --preset paper-fig1 --seeds 0-15 --out runs/scaling-d --quiet
    "$F" plot scaling runs/scaling-d --out plots/scaling-d
fi
echo "figures redrawn in plots/"
