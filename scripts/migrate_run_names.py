"""Rename run directories to the current naming rule, ``<run_tag>-<hash of the config>``
(normmatters/runs.py), e.g. runs made before the hash was part of the name:

    python scripts/migrate_run_names.py results            # rename
    python scripts/migrate_run_names.py results --dry-run  # only print what would move

Each run's hash comes from its own saved config.yaml, so a migrated run is found, skipped when
finished and resumed exactly as one made under the new rule. Nothing inside a run changes; a target
that already exists stops the script before anything is renamed.
"""
import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from normmatters import runs


def plan(root: Path) -> list[tuple[Path, Path]]:
    moves = []
    for run_dir in runs.find_runs(root):
        config = OmegaConf.to_container(OmegaConf.load(run_dir / runs.CONFIG))
        target = run_dir.parent / f"{config.get('run_tag') or run_dir.name}-{runs.config_hash(config)}"
        if target != run_dir:
            moves.append((run_dir, target))
    return moves


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="directory searched for run directories")
    parser.add_argument("--dry-run", action="store_true", help="print the renames, do none")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: root {str(args.root)!r} is not a directory", file=sys.stderr)
        return 2
    moves = plan(args.root)
    clash = [t for _, t in moves if t.exists()] + [t for i, (_, t) in enumerate(moves) if t in [m[1] for m in moves[:i]]]
    if clash:
        print(f"error: {clash[0]} already exists (or two runs map to it); nothing renamed", file=sys.stderr)
        return 1
    for source, target in moves:
        print(f"{source} -> {target.name}")
        if not args.dry_run:
            source.rename(target)
    print(f"{len(moves)} run directories {'to rename' if args.dry_run else 'renamed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
