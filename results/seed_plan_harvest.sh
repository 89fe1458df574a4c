#!/bin/bash
# Copy the finished or diverged runs of the seed plan's checkouts into this repository's results/
# (tables, config, meta; no checkpoint, lock or wandb), only those whose meta.json records a clean
# tree; then record their manifests and regenerate every report. Run from the repository root:
#   bash results/seed_plan_harvest.sh <checkout> [<checkout> ...]
set -eu
for checkout in "$@"; do
  for meta in "$checkout"/results/*_cpu/*/meta.json; do
    src=$(dirname "$meta"); rel=${src#"$checkout"/}
    [ -e "$rel/meta.json" ] && continue
    state=$(python -c "import json, sys; m = json.load(open(sys.argv[1])); print(m['status'], '+dirty' in m['git_commit'])" "$meta")
    case "$state" in
      "finished False"|"diverged False")
        mkdir -p "$rel"
        find "$src" -maxdepth 1 -type f ! -name checkpoint.pt ! -name '*.lock' ! -name '.*' -exec cp {} "$rel/" \;
        echo "harvested $rel ($state)";;
      *True) echo "NOT harvested (dirty tree): $rel";;
    esac
  done
done
python scripts/verify_runs.py --record results
python scripts/plot.py results --readme README.md --docs docs/results.md
