"""An experiment as data: a file in ``configs/experiment/`` naming its arms (each a training config of
``configs/arm/``), which arm feeds which, and its report. Loaded and checked here, once; the runner
(:mod:`.runner`) only executes it.

    description: one line for --list
    name: wd_vgg11_{profile}       # the directory its runs go in, under the out-root ({profile}: the profile)
    report: wd                     # a key of normmatters.experiments.report.REPORTS
    minutes_per_run: {cpu: 13}     # per profile, until finished runs give a measured figure
    overrides: [model=resnet18]    # optional: extra overrides of every arm (after the arm's own)
    profile_overrides:             # optional: extra overrides of every arm at one profile (its scale)
      cpu: [model.width=0.5]
    figures:                       # optional (report `claims`): one figure per entry, test error vs epoch
      lp_bn: [l2, l1]              #   one panel of these arms
      float8:                      #   or a mapping:
        title: 8-bit statistics    #     what it shows (the runs' config adds data and scale)
        panels: {L2 BN: [l2, l2_e4m3], L1 BN: [l1, l1_e4m3]}   # small multiples (or arms: [...])
        gaps: true                 #     a row of paired gaps to each panel's first arm
        plot: hazards              #     (instead of error curves: the runs' precision.parquet)
    captions: {lp_bn: ...}         # optional: a sentence or two per figure, printed under it in REPORT.md
    claims: [...]                  # optional: see normmatters.experiments.claims
    report_note: "..."             # optional: what REPORT.md's rows of this experiment must also say
    seed_cap: {cpu: 10}            # optional: most seeds the seed plan may give an arm, per profile
    seed_plan: {cpu: {l2: 10}}     # written by --plan-seeds (normmatters.experiments.seed_plan)
    families:                      # optional (report `wd`): variants that stand for the main arms under
      torch03:                     #   another set-up, judged against each other in a table of their own
        note: "With ..."           #   the sentence above that table
        arms: {wd_on: wd_on_torch03, wd_off: wd_off_torch03}   # main arm: the variant standing for it
    arms:                          # run by default
      wd_on: {label: WD on, overrides: [arm=wd_on]}
      wd_lr_correction: {label: ..., overrides: [...], needs: [wd_on]}   # same seed, runs after wd_on
    variants:                      # run when named (--arms); reported when their runs exist
      ...: {label: ..., overrides: [...], needs: [...], report: false}

Each arm's runs are tagged ``<arm>_s<seed>`` (its config's ``run_tag``; the directory adds the
config hash, :mod:`normmatters.runs`) and go in ``<out_root>/<name>/``, which is how the report finds
the runs of every seed.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from omegaconf import OmegaConf

from .claims import Claim, parse_claims

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "configs" / "experiment"
PROFILES = ("paper", "cpu", "smoke")
KEYS = ("name", "description", "report", "minutes_per_run", "overrides", "profile_overrides", "figures", "captions", "arms",
        "variants", "claims", "seed_cap", "seed_plan", "report_note", "families")
ARM_KEYS = ("label", "overrides", "needs", "report")
FIGURE_KEYS = ("title", "arms", "panels", "gaps", "plot")
PLOTS = ("curves", "hazards")
# figures a report draws whatever the file says (their captions are keyed by these names)
FIXED_FIGURES = {"wd": ("figure", "norms", "dynamics")}


@dataclass(frozen=True)
class Family:
    """Variants standing for the main arms under another set-up (e.g. the authors' initialization)."""
    note: str
    arms: dict[str, str]  # {main arm: variant}


@dataclass(frozen=True)
class Arm:
    name: str
    label: str
    overrides: tuple[str, ...]
    needs: tuple[str, ...] = ()
    report: bool = True
    variant: bool = False


@dataclass(frozen=True)
class FigureSpec:
    """One figure of an experiment: ``panels`` side by side, each (panel title, arm names)."""
    name: str
    title: str
    panels: tuple[tuple[str, tuple[str, ...]], ...]
    gaps: bool = False
    plot: str = "curves"

    @property
    def arms(self) -> tuple[str, ...]:
        """Every arm of the figure, once, in panel order."""
        return tuple(dict.fromkeys(a for _, arms in self.panels for a in arms))


@dataclass
class Experiment:
    name: str
    path: Path
    description: str
    report: str
    minutes_per_run: dict[str, float]
    profile_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    arms: dict[str, Arm] = field(default_factory=dict)  # default arms first, then variants
    figures: dict[str, FigureSpec] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)  # {figure name: caption}
    claims: list[Claim] = field(default_factory=list)
    seed_cap: dict[str, int] = field(default_factory=dict)
    seed_plan: dict[str, dict[str, int]] = field(default_factory=dict)  # {profile: {arm: seeds}}
    report_note: str = ""
    families: dict[str, Family] = field(default_factory=dict)
    dir_pattern: str = ""  # the file's `name`: its runs' directory, {profile} filled in

    def dir_name(self, profile: str) -> str:
        """The directory (under an out-root) of this experiment's runs at ``profile``."""
        return self.dir_pattern.format(profile=profile)

    def dir_names(self) -> set[str]:
        """Its directories at every profile: where a report looks for its runs."""
        return {self.dir_name(p) for p in PROFILES}

    @property
    def default_arms(self) -> list[str]:
        return [n for n, a in self.arms.items() if not a.variant]

    def order(self, names: list[str]) -> list[str]:
        """``names`` and everything they need, each arm after the arms it needs (file order otherwise)."""
        unknown = [n for n in names if n not in self.arms]
        if unknown:
            raise ValueError(f"--arms names {unknown[0]!r}, not an arm of experiment {self.name}; valid: "
                             f"{', '.join(self.arms)}")
        wanted: set[str] = set()
        stack = list(names)
        while stack:
            name = stack.pop()
            if name not in wanted:
                wanted.add(name)
                stack.extend(self.arms[name].needs)
        done: list[str] = []
        while len(done) < len(wanted):
            for name in self.arms:  # validated acyclic at load time, so each pass adds one
                if name in wanted and name not in done and all(n in done for n in self.arms[name].needs):
                    done.append(name)
                    break
        return done


def _arm(exp: str, name: str, spec, variant: bool) -> Arm:
    spec = OmegaConf.to_container(spec) if spec is not None else {}
    if not isinstance(spec, dict):
        raise ValueError(f"experiment {exp}: arm {name!r} must be a mapping with keys {', '.join(ARM_KEYS)}")
    bad = sorted(set(spec) - set(ARM_KEYS))
    if bad:
        raise ValueError(f"experiment {exp}: arm {name!r} has unknown key {bad[0]!r}; valid: {', '.join(ARM_KEYS)}")
    overrides = spec.get("overrides") or []
    if not isinstance(overrides, list) or not overrides or not all(isinstance(o, str) for o in overrides):
        raise ValueError(f"experiment {exp}: arm {name!r} needs `overrides`, a non-empty list of key=value strings")
    _no_name(exp, f"arm {name!r}", overrides)
    return Arm(name, str(spec.get("label", name)), tuple(overrides), tuple(spec.get("needs") or ()),
               bool(spec.get("report", True)), variant)


def load_experiment(name_or_path: str | Path) -> Experiment:
    """The experiment ``configs/experiment/<name>.yaml`` (or a path to such a file), checked."""
    path = Path(name_or_path)
    if path.suffix != ".yaml":
        path = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"--experiment {name_or_path!r} is not valid; valid: {', '.join(experiment_names())} "
                         "or a path to such a .yaml file")
    try:
        raw = OmegaConf.load(path)
    except Exception as err:  # yaml and omegaconf raise several kinds
        raise ValueError(f"experiment file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    bad = sorted(set(raw) - set(KEYS))
    if bad:
        raise ValueError(f"experiment file {path}: unknown key {bad[0]!r}; valid: {', '.join(KEYS)}")
    exp = Experiment(path.stem, path, str(raw.get("description", "")), str(raw.get("report", "")),
                     {str(k): float(v) for k, v in (raw.get("minutes_per_run") or {}).items()},
                     _profile_overrides(path.stem, raw.get("profile_overrides")),
                     _override_list(path.stem, "overrides", raw.get("overrides")))
    for group, variant in (("arms", False), ("variants", True)):
        for name, spec in (raw.get(group) or {}).items():
            if name in exp.arms:
                raise ValueError(f"experiment {exp.name}: arm {name!r} is defined twice")
            exp.arms[str(name)] = _arm(exp.name, str(name), spec, variant)
    if not exp.default_arms:
        raise ValueError(f"experiment {exp.name}: `arms` is empty; name at least one arm")
    for arm in exp.arms.values():
        missing = [n for n in arm.needs if n not in exp.arms]
        if missing:
            raise ValueError(f"experiment {exp.name}: arm {arm.name!r} needs {missing[0]!r}, which is not an arm")
    _check_acyclic(exp)
    exp.figures = _figures(exp, raw.get("figures"))
    exp.captions = _captions(exp, raw.get("captions"))
    exp.claims = parse_claims(exp.name, raw.get("claims"), exp.arms)
    exp.seed_cap, exp.seed_plan = _seed_cap(exp.name, raw.get("seed_cap")), _seed_plan(exp, raw.get("seed_plan"))
    exp.report_note = str(raw.get("report_note") or "")
    exp.families = _families(exp, raw.get("families"))
    exp.dir_pattern = _dir_pattern(exp.name, raw.get("name"))
    return exp


def _families(exp: Experiment, raw) -> dict[str, Family]:
    """``families``: each a note and {main arm: variant standing for it}, every name an arm of ``exp``."""
    raw = OmegaConf.to_container(raw) if OmegaConf.is_config(raw) else (raw or {})
    out = {}
    for name, spec in raw.items():
        where = f"experiment {exp.name}: families.{name}"
        if not isinstance(spec, dict) or set(spec) != {"note", "arms"} or not isinstance(spec["arms"], dict):
            raise ValueError(f"{where} must be a mapping with keys note and arms ({{main arm: variant}})")
        for arm in (*spec["arms"], *spec["arms"].values()):
            if arm not in exp.arms:
                raise ValueError(f"{where}: {arm!r} is not an arm; valid: {', '.join(exp.arms)}")
        out[name] = Family(str(spec["note"]), dict(spec["arms"]))
    return out


def _dir_pattern(exp: str, raw) -> str:
    """``name``: a directory name, with at most the field {profile}."""
    try:
        valid = isinstance(raw, str) and "/" not in raw and bool(raw.format(profile="p"))
    except (KeyError, IndexError, ValueError):  # another {field}, or a lone brace
        valid = False
    if not valid:
        raise ValueError(f"experiment {exp}: name={raw!r} is not valid; it must be a directory name, "
                         "{profile} standing for the profile (e.g. wd_vgg11_{profile})")
    return raw


def _no_name(exp: str, key: str, overrides) -> None:
    """The file's ``name`` alone sets the directory (the runner passes it after every override list)."""
    if any(str(o).split("=", 1)[0].lstrip("+~") == "name" for o in overrides):
        raise ValueError(f"experiment {exp}: {key} sets name=; the directory of the runs is the file's `name:` key")


def _seed_cap(exp: str, raw) -> dict[str, int]:
    raw = OmegaConf.to_container(raw) if OmegaConf.is_config(raw) else (raw or {})
    if not isinstance(raw, dict):
        raise ValueError(f"experiment {exp}: seed_cap must map a profile to a number of seeds")
    for profile, n in raw.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"experiment {exp}: seed_cap.{profile}={n!r} is not valid; it must be an integer >= 1")
    return {str(k): int(v) for k, v in raw.items()}


def _seed_plan(exp: Experiment, raw) -> dict[str, dict[str, int]]:
    raw = OmegaConf.to_container(raw) if OmegaConf.is_config(raw) else (raw or {})
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ValueError(f"experiment {exp.name}: seed_plan must map a profile to {{arm: number of seeds}}")
    for profile, counts in raw.items():
        for arm, n in counts.items():
            if arm not in exp.arms:
                raise ValueError(f"experiment {exp.name}: seed_plan.{profile} names {arm!r}, not an arm; "
                                 f"valid: {', '.join(exp.arms)}")
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"experiment {exp.name}: seed_plan.{profile}.{arm}={n!r} is not valid; "
                                 "it must be an integer >= 1")
    return {str(p): {str(a): int(n) for a, n in c.items()} for p, c in raw.items()}


def _figures(exp: Experiment, raw) -> dict[str, FigureSpec]:
    raw = OmegaConf.to_container(raw) if raw is not None else {}
    if not isinstance(raw, dict):
        raise ValueError(f"experiment {exp.name}: figures must map a figure name to a list of arms or a mapping")
    return {str(name): _figure(exp, str(name), spec) for name, spec in raw.items()}


def _figure(exp: Experiment, name: str, spec) -> FigureSpec:
    where = f"experiment {exp.name}: figure {name!r}"
    if isinstance(spec, list):
        spec = {"arms": spec}
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be a list of arms or a mapping with keys {', '.join(FIGURE_KEYS)}")
    bad = sorted(set(spec) - set(FIGURE_KEYS))
    if bad:
        raise ValueError(f"{where} has unknown key {bad[0]!r}; valid: {', '.join(FIGURE_KEYS)}")
    if ("arms" in spec) == ("panels" in spec):
        raise ValueError(f"{where} needs exactly one of `arms` (one panel) or `panels` ({{panel title: [arm, ...]}})")
    panels = spec["panels"] if "panels" in spec else {"": spec["arms"]}
    if not isinstance(panels, dict) or not panels or not all(isinstance(v, list) and v for v in panels.values()):
        raise ValueError(f"{where}: panels={panels!r} is not valid; it must map a panel title to a non-empty list of arms")
    for arms in panels.values():
        unknown = [a for a in arms if a not in exp.arms]
        if unknown:
            raise ValueError(f"{where} names {unknown[0]!r}, not an arm")
    if spec.get("plot", "curves") not in PLOTS:
        raise ValueError(f"{where}: plot={spec['plot']!r} is not valid; valid: {', '.join(PLOTS)}")
    if not isinstance(spec.get("gaps", False), bool):
        raise ValueError(f"{where}: gaps={spec['gaps']!r} is not valid; it must be true or false")
    return FigureSpec(name, str(spec.get("title") or name.replace("_", " ")),
                      tuple((str(t), tuple(map(str, a))) for t, a in panels.items()),
                      spec.get("gaps", False), spec.get("plot", "curves"))


def _captions(exp: Experiment, raw) -> dict[str, str]:
    raw = OmegaConf.to_container(raw) if OmegaConf.is_config(raw) else (raw or {})
    valid = [*exp.figures, *FIXED_FIGURES.get(exp.report, ())]
    if not isinstance(raw, dict):
        raise ValueError(f"experiment {exp.name}: captions must map a figure name to a sentence or two")
    for name, text in raw.items():
        if name not in valid:
            raise ValueError(f"experiment {exp.name}: captions.{name} names no figure; valid: {', '.join(valid) or 'none'}")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"experiment {exp.name}: captions.{name}={text!r} is not valid; it must be a non-empty string")
    return {str(k): " ".join(v.split()) for k, v in raw.items()}


def _override_list(exp: str, key: str, raw) -> tuple[str, ...]:
    raw = OmegaConf.to_container(raw) if OmegaConf.is_config(raw) else (raw or [])
    if not isinstance(raw, list) or not all(isinstance(o, str) for o in raw):
        raise ValueError(f"experiment {exp}: {key} must be a list of key=value strings")
    _no_name(exp, key, raw)
    return tuple(raw)


def _profile_overrides(exp: str, raw) -> dict[str, tuple[str, ...]]:
    raw = OmegaConf.to_container(raw) if OmegaConf.is_config(raw) else (raw or {})
    if not isinstance(raw, dict):
        raise ValueError(f"experiment {exp}: profile_overrides must map a profile to a list of key=value strings")
    return {str(k): _override_list(exp, f"profile_overrides.{k}", v) for k, v in raw.items()}


def _check_acyclic(exp: Experiment) -> None:
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 1:
            raise ValueError(f"experiment {exp.name}: arms need each other in a cycle: {' -> '.join(path + [name])}")
        if state.get(name) == 2:
            return
        state[name] = 1
        for n in exp.arms[name].needs:
            visit(n, path + [name])
        state[name] = 2

    for name in exp.arms:
        visit(name, [])


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def discover(exp: Experiment, exp_dir: Path) -> dict[str, list[Path]]:
    """{label: run dirs, by seed} of the reported arms of ``exp`` found in ``exp_dir``
    (``<arm>_s<seed>-<hash>``, or ``<arm>_s<seed>`` as named before hashes). Two runs of one arm and
    seed (other settings) cannot be told apart: a ValueError naming them."""
    found: dict[str, list[Path]] = {}
    for name, arm in exp.arms.items():
        if not arm.report:
            continue
        pattern = re.compile(rf"{re.escape(name)}_s(\d+)(-[0-9a-f]{{8}})?")
        by_seed: dict[int, list[Path]] = defaultdict(list)
        for path in Path(exp_dir).iterdir() if Path(exp_dir).is_dir() else ():
            match = pattern.fullmatch(path.name)
            if match and path.is_dir():
                by_seed[int(match.group(1))].append(path)
        for seed, paths in by_seed.items():
            if len(paths) > 1:
                raise ValueError(f"{exp_dir} holds {len(paths)} runs of arm {name} seed {seed} "
                                 f"({', '.join(sorted(p.name for p in paths))}); a report needs one per arm and "
                                 "seed: move the others out (or run them under another name=)")
        if by_seed:
            found[arm.label] = [by_seed[seed][0] for seed in sorted(by_seed)]
    return found


def by_arm_name(exp: Experiment, by_label: Mapping[str, Iterable[Path]]) -> dict[str, list[Path]]:
    """``discover``'s {label: run dirs} keyed by arm name instead, as claims and figures name arms."""
    return {n: [Path(d) for d in by_label[a.label]] for n, a in exp.arms.items() if a.label in by_label}
