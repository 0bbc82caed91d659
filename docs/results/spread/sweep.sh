#!/usr/bin/env bash
# The posterior-spread sweep (issue 18 item 4): vpt, seed 1, base2new's default preset, one run per setting.
# Run at commit 222dfdb-era code on the same pretraining run as the shipped backbone, in fp32 (the shipped
# backbone is its fp16 packing; zero-shot figures agree to 0.1 point). The old defaults are spelled out
# (log sigma^2 init -9.2, log-variance lr x1), since the defaults changed after this sweep.
OLD="--log-var-init -9.2 --log-var-lr-scale 1"
run() { name=$1; shift; vpt-eval base2new --methods vpt --seeds 1 -q --out runs/spread/$name "$@"; }
run default $OLD
run official-init --log-var-init 0.5 --log-var-lr-scale 1
run lr-x100 --log-var-init -9.2 --log-var-lr-scale 100
run lr-x1000 --log-var-init -9.2 --log-var-lr-scale 1000
run init-0.1-lr-x100 --log-var-init -4.6 --log-var-lr-scale 100   # the new default
run beta-0.1 $OLD --beta 0.1
run beta-1 $OLD --beta 1.0
run kl-sum $OLD --kl-reduction sum
run L16 $OLD --samples 16
