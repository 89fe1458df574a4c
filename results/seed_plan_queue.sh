#!/bin/bash
# One process of the seed plan's runs (results/README.md, "The seed plan's runs"), run from a clean
# checkout of the plan's commit so every run records that commit without +dirty:
#   git worktree add --detach <checkout> 8a93028     # one checkout per process
#   bash results/seed_plan_queue.sh <checkout> <finish by, e.g. 17:55> 3 5 7 ...   # and 4 6 8 ... beside it
# Each arm and seed is one reproduce.py command; one that cannot finish by the given time (its cpu
# minutes per run in results/seed_plan_cpu.md, x 1.3) is skipped, so no run is cut off. `touch <checkout>/STOP` ends the queue after the
# current run. The checkout's tracked reports are reset before and after each command. Which runs are
# finished is read once at the start (one dry run per experiment), so finished ones cost nothing.
set -u
checkout=$1 deadline=$(date -d "$2" +%s); shift 2
cd "$checkout" || exit 1
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
data="data=image_folder data.path=../shared/data/cifar10-jpeg.tar.gz train.progress=false"
seeds=$(IFS=,; echo "$*")
todo=$(for e in norms_cifar half_precision_probe wd_vgg11 float_formats; do  # "experiment arm seed" still to run
  plan=$(python scripts/reproduce.py --profile cpu --out-root results --experiment "$e" --planned --seeds "$seeds" --dry-run $data) ||
    { echo "error: the dry run of $e failed (above); no run started" >&2; exit 1; }
  awk -v e="$e" '$1 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ && $NF ~ /_s[0-9]+-[0-9a-f]+$/ && $4 != "finished" && $4 != "diverged" { print e, $2, $3 }' <<< "$plan"
done) || exit 1
echo "$(date +%T) runs to do: $(echo "$todo" | grep -c .)"

minutes() {  # experiment arm: the plan's cpu minutes per run, rounded up
  awk -v e="$1" -v a="$2" '$1 == "experiment" {x = $2} x == e && NF == 5 && $1 == a {
    m = $5 + 0; print (m == int(m)) ? m : int(m) + 1; exit }' results/seed_plan_cpu.md
}

queued=""
run() {  # experiment arm seed
  grep -qx "$1 $2 $3" <<< "$todo" || return 0
  queued+="$1 $2 $3"$'\n'
  [ -e STOP ] && { echo "STOP: skip $1 $2 s$3"; return; }
  local m; m=$(minutes "$1" "$2")
  [ -n "$m" ] || { echo "error: no min/run for $1 $2 in results/seed_plan_cpu.md; skip s$3"; return; }
  if [ $(( $(date +%s) + m * 78 )) -gt "$deadline" ]; then echo "$(date +%T) skip $1 $2 s$3 (~$m min)"; return; fi
  git checkout -q -- results
  echo "$(date +%T) start $1 $2 s$3"
  python scripts/reproduce.py --profile cpu --out-root results --experiment "$1" --planned --arms "$2" --seeds "$3" $data
  echo "$(date +%T) done $1 $2 s$3 rc=$?"
  git checkout -q -- results
}

for seed in "$@"; do  # PAPER.md's experiments first, inconclusive claims' arms first within them
  for a in l2 l1 linf wn bwn topk l1_fp16 bwn_gain l2_fp16 l1_c_quarter l1_c_4x; do run norms_cifar $a "$seed"; done
  for a in l1_fp16_no_wd l2_no_wd l2 l2_fp16_no_wd l2_fp16_onepass; do run half_precision_probe $a "$seed"; done
  for a in wd_on wd_lr_correction wd_norm_schedule; do run wd_vgg11 $a "$seed"; done
done
for seed in "$@"; do  # then the claims beyond the paper
  for a in l2 l2_bf16 l1 l1_bf16 topk l2_e4m3_fwd l2_e5m2_fwd l1_e4m3_fwd l1_e5m2_fwd topk_e4m3_fwd; do
    run float_formats $a "$seed"
  done
done
missed=$(printf '%s\n' "$todo" | grep . | grep -vxF -f <(printf '%s' "$queued") | paste -sd, -)
[ -z "$missed" ] || echo "error: planned but named by no loop above, not run: $missed"
echo "$(date +%T) queue finished"
