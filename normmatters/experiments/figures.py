"""An experiment's figures (its file's ``figures:``), drawn from its runs with one colour per arm in
every panel, and the captions REPORT.md prints under them (its file's ``captions:``).

Colours: an arm keeps one colour in every figure of its experiment, and arms drawn in one panel
never share a colour. Arms are coloured in the order they first appear in the figures, each with the
first colour of the palette that no arm sharing a panel with it has: with small multiples (one panel
per norm, the formats in the same order in each), each format takes the same colour in every panel.
A hazards figure draws all its arms in each panel, so they all differ.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

from matplotlib.figure import Figure

from normmatters.experiments.homes import experiment_homes
from normmatters.plots.error_curves import COLORS, plot_error_panels
from normmatters.curves.hazards import hazard_fractions
from normmatters.plots.hazards import plot_hazards


def _panels(exp) -> list[tuple[str, ...]]:
    """Every group of arms drawn in one panel (a hazards figure: all its arms)."""
    out = []
    for spec in exp.figures.values():
        out += [spec.arms] if spec.plot == "hazards" else [arms for _, arms in spec.panels]
    return out


def arm_colors(exp) -> dict[str, str]:
    """{arm name: colour} for every arm in the experiment's figures (see the module docstring)."""
    panels = _panels(exp)
    colors: dict[str, str] = {}
    for arm in dict.fromkeys(a for panel in panels for a in panel):
        taken = {colors[a] for panel in panels if arm in panel for a in panel if a in colors}
        colors[arm] = next((c for c in COLORS if c not in taken), COLORS[len(colors) % len(COLORS)])
    return colors


def draw_figures(exp, by_name: Mapping[str, list[Path]]) -> Iterator[tuple[str, Figure]]:
    """(figure name, figure) per entry of the experiment's ``figures`` that has runs to draw."""
    colors = {exp.arms[a].label: c for a, c in arm_colors(exp).items()}
    for spec in exp.figures.values():
        panels = [(title, {exp.arms[a].label: by_name[a] for a in arms if a in by_name}) for title, arms in spec.panels]
        panels = [(title, arms) for title, arms in panels if arms]
        if not panels:
            continue
        if spec.plot == "hazards":
            arms = {label: dirs for _, found in panels for label, dirs in found.items()}
            if any(not hazard_fractions(dirs).empty for dirs in arms.values()):
                yield spec.name, plot_hazards(arms, spec.title, colors)
        else:
            yield spec.name, plot_error_panels(panels, spec.title, colors, spec.gaps)


def figure_captions(results_dir: str | Path) -> dict[str, str]:
    """{PNG path relative to ``results_dir`` (e.g. 'norms_resnet20_cpu/lp_bn.png'): its caption} for
    every figure under ``results_dir`` that its experiment's file captions."""
    out = {}
    for exp, exp_dir in experiment_homes(results_dir):
        for name, caption in exp.captions.items():
            if (exp_dir / f"{name}.png").exists():
                out[f"{exp_dir.name}/{name}.png"] = caption
    return out
