"""What a figure's runs are, in words, read from each run's config.yaml and meta.json: the model and
its width, the data, the epochs and LR drops, the seeds. A title built from it names the data and
the scale of what is drawn, never a directory or an experiment identifier."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

import yaml

from normmatters import runs

FRACTIONS = {0.125: "⅛", 0.25: "¼", 0.5: "½", 0.75: "¾"}
MODELS = ((r"resnet(\d+)(_cifar)?", "ResNet-{0}"), (r"vgg(\d+)", "VGG-{0}"))


def run_config(run_dir: str | Path) -> dict:
    """The run's config.yaml as a dict ({} when there is none)."""
    path = Path(run_dir) / runs.CONFIG
    config = yaml.safe_load(path.read_text()) if path.exists() else None
    return config if isinstance(config, dict) else {}


def model_text(name: str, width=None) -> str:
    """'resnet20', 0.5 -> 'ResNet-20 (½ width)'; full width says nothing."""
    for pattern, shown in MODELS:
        match = re.fullmatch(pattern, str(name))
        if match:
            name = shown.format(*match.groups())
            break
    if width is None or float(width) == 1.0:
        return str(name)
    return f"{name} ({FRACTIONS.get(float(width), f'{float(width):g} ×')} width)"


def milestones(run_dirs: Iterable[str | Path]) -> list[int]:
    """The LR milestones (epochs after which the LR drops) of the first run whose config names them."""
    for d in run_dirs:
        found = (run_config(d).get("optim") or {}).get("milestones")
        if found:
            return sorted(int(m) for m in found)
    return []


def _common(values: Iterable) -> str | None:
    """The values, each once, joined by ' / ' (None when there is none)."""
    found = sorted({str(v) for v in values if v not in (None, "")})
    return " / ".join(found) if found else None


def seeds_text(arms: Mapping[str, Iterable[str | Path]]) -> str | None:
    """'3 seeds per arm', '3–5 seeds per arm' (finished or diverged runs), None with none."""
    counts = [sum(runs.status(d) in runs.DONE for d in dirs) for dirs in arms.values()]
    counts = [n for n in counts if n]
    if not counts:
        return None
    low, high = min(counts), max(counts)
    many = "s" if high > 1 else ""
    return f"{low} seed{many} per arm" if low == high else f"{low}–{high} seeds per arm"


def wrap_parts(text: str, width: int) -> list[str]:
    """``text`` broken into lines of at most about ``width`` characters, at its ' · ' separators."""
    lines: list[str] = []
    for part in text.split(" · "):
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " · " + part
        else:
            lines.append(part)
    return lines


def scale_lines(arms: Mapping[str, Iterable[str | Path]], width: int) -> list[str]:
    """``scale_text`` in lines of at most about ``width`` characters."""
    return wrap_parts(scale_text(arms), width)


def scale_parts(run_dirs: Iterable[str | Path]) -> list[str]:
    """['ResNet-20 (½ width)', 'CIFAR-10 (JPEG copy), train subset 20000/50000, test 10000',
    '20 epochs, LR ÷10 after epochs 5, 10, 15'] for these runs (what their files say; values that
    differ between runs joined by ' / ')."""
    dirs = [Path(d) for d in run_dirs]
    configs = [run_config(d) for d in dirs]
    model = _common(model_text((c.get("model") or {}).get("name"), (c.get("model") or {}).get("width"))
                    for c in configs if (c.get("model") or {}).get("name"))
    data = _common(runs.read_meta(d).get("data_label") for d in dirs)
    epochs = _common((c.get("train") or {}).get("epochs") for c in configs)
    schedule = f"{epochs} epochs" if epochs else None
    drops, gamma = milestones(dirs), _common((c.get("optim") or {}).get("gamma") for c in configs)
    if drops and schedule:
        factor = f"÷{1 / float(gamma):g}" if gamma and "/" not in gamma and float(gamma) > 0 else "drops"
        schedule += f", LR {factor} after epoch{'s' if len(drops) > 1 else ''} {', '.join(map(str, drops))}"
    return [p for p in (model, data, schedule) if p]


def scale_text(arms: Mapping[str, Iterable[str | Path]]) -> str:
    """'ResNet-20 (½ width) · CIFAR-10 (JPEG copy), train subset 20000/50000, test 10000 · 20 epochs,
    LR ÷10 after epochs 5, 10, 15 · 3 seeds per arm' for the runs of ``arms`` ({label: run dirs})."""
    seeds = seeds_text(arms)
    return " · ".join(scale_parts(d for found in arms.values() for d in found) + ([seeds] if seeds else []))
