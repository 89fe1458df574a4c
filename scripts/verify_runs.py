"""Check that run directories are intact: every done run's config and tables still match the
manifest (size and sha256) its meta.json recorded when it finished.

    python scripts/verify_runs.py [ROOT ...]            # default: results; exit 1 and one line per problem
    python scripts/verify_runs.py --record [ROOT ...]   # once, for runs made before manifests existed

--record writes a manifest for each done run (finished/diverged) that has none, of its files as they
are now; it never replaces a recorded manifest, and skips a run another process holds.
"""
import argparse
import sys
from pathlib import Path

from normmatters import runs


def record(root: Path) -> int:
    added = 0
    for run_dir in runs.find_runs(root):
        with runs.RunLock(run_dir):  # not while a process works on it (RunLocked otherwise)
            meta = runs.read_meta(run_dir)
            if meta.get("status") in runs.DONE and runs.MANIFEST_KEY not in meta:
                runs.record_manifest(run_dir)
                added += 1
    return added


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="*", type=Path, default=[Path("results")],
                        help="run directories, or directories to search for them (default: results)")
    parser.add_argument("--record", action="store_true", help="record a manifest for done runs that have none")
    args = parser.parse_args()
    missing = [str(r) for r in args.roots if not r.is_dir()]
    if missing:
        print(f"error: {missing[0]!r} is not a directory", file=sys.stderr)
        return 2
    try:
        if args.record:
            for root in args.roots:
                print(f"{root}: recorded {record(root)} manifests")
        found = [run_dir for root in args.roots for run_dir in runs.find_runs(root)]
        problems = [line for run_dir in found for line in runs.verify_run(run_dir)]
    except (runs.RunLocked, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{len(found)} runs, {len(problems)} problems", file=sys.stderr if problems else sys.stdout)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
