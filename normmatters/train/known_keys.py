"""Which config keys exist: every key some file of configs/ sets. A key added on the command line
(``+train.foo=1``) that no config file knows is a typo or a stale option, and would otherwise be
carried silently into the run's identity."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FREE = ("norm.options", "weight_norm.options", "hydra")  # checked by their owners, or Hydra's own


def _leaves(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        out.add(f"{prefix}{key}")
        if isinstance(value, dict):
            out |= _leaves(value, f"{prefix}{key}.")
    return out


def configs_dir() -> Path:
    """The configs/ this run was composed from: Hydra knows it (an installed package has no copy of
    its own); outside a Hydra app, the repository's."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.config_sources:
            if source.provider == "main" and source.schema == "file":
                return Path(source.path)
    return REPO_CONFIGS


@lru_cache(maxsize=4)
def known_keys(configs: Path = REPO_CONFIGS) -> frozenset[str]:
    keys = {p.name for p in configs.iterdir() if p.is_dir() and p.name != "experiment"}  # the groups
    for path in configs.rglob("*.yaml"):
        parts = path.relative_to(configs).parts
        if parts[0] == "experiment":  # experiment files of scripts/reproduce.py, not train configs
            continue
        text = path.read_text()
        tree = yaml.safe_load(text) or {}
        tree.pop("defaults", None)
        top = len(parts) == 1 or "@package _global_" in text
        keys |= _leaves(tree, "" if top else f"{parts[0]}.")
    return frozenset(keys)


def check_known(config: dict) -> None:
    """A ValueError naming the first key no config file defines."""
    known = known_keys(configs_dir())
    for key in sorted(_leaves(config)):
        if key in known or any(key == f or key.startswith(f + ".") for f in FREE):
            continue
        group = key.rpartition(".")[0]
        siblings = sorted(k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == group)
        raise ValueError(f"{key} is not a config key (a typo, or an option that no longer exists); valid keys "
                         f"{'of ' + group if group else 'at the top level'}: {', '.join(siblings)}")
