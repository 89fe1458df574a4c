#!/bin/bash
# One process of the seed plan's runs (results/README.md, "The seed plan's runs"), run from a clean
# checkout of the plan's commit so every run records that commit without +dirty:
#   git worktree add --detach <checkout> 8a93028     # one checkout per process
#   bash results/seed_plan_queue.sh <checkout> <finish by, e.g. 17:55> 3 5 7 ...   # and 4 6 8 ... beside it
# Each arm and seed is one reproduce.py command; one that cannot finish by the given time (its cpu
# minutes x 1.3) is skipped, so no run is cut off. `touch <checkout>/STOP` ends the queue after the
# current run. The checkout's tracked reports are reset before and after each command.
set -u
checkout=$1 deadline=$(date -d "$2" +%s); shift 2
cd "$checkout" || exit 1
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
data="data=image_folder data.path=../shared/data/cifar10-jpeg.tar.gz train.progress=false"

run() {  # experiment arm seed minutes
  [ -e STOP ] && { echo "STOP: skip $1 $2 s$3"; return; }
  if [ $(( $(date +%s) + $4 * 78 )) -gt "$deadline" ]; then echo "$(date +%T) skip $1 $2 s$3 (~$4 min)"; return; fi
  git checkout -q -- results
  echo "$(date +%T) start $1 $2 s$3"
  python scripts/reproduce.py --profile cpu --out-root results --experiment "$1" --planned --arms "$2" --seeds "$3" $data
  echo "$(date +%T) done $1 $2 s$3 rc=$?"
  git checkout -q -- results
}

for seed in "$@"; do  # PAPER.md's experiments first, inconclusive claims' arms first within them
  for a in l2:21 l1:21 linf:16 wn:14 bwn:13 topk:15 l1_fp16:27 bwn_gain:19 l2_fp16:24 l1_c_quarter:18 l1_c_4x:18; do
    run norms_cifar "${a%%:*}" "$seed" "${a##*:}"
  done
  for a in l1_fp16_no_wd:10 l2_no_wd:9 l2:8 l2_fp16_no_wd:8 l2_fp16_onepass:8; do
    run half_precision_probe "${a%%:*}" "$seed" "${a##*:}"
  done
  for a in wd_on:12 wd_lr_correction:11 wd_norm_schedule:13; do
    run wd_vgg11 "${a%%:*}" "$seed" "${a##*:}"
  done
done
for seed in "$@"; do  # then the claims beyond the paper
  for a in l2:5 l2_bf16:7 l1:6 l1_bf16:6 topk:4 l2_e4m3_fwd:18 l2_e5m2_fwd:9 l1_e4m3_fwd:14 l1_e5m2_fwd:8 topk_e4m3_fwd:12; do
    run float_formats "${a%%:*}" "$seed" "${a##*:}"
  done
done
echo "$(date +%T) queue finished"
