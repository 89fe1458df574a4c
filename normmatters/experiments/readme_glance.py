"""The README's "Results at a glance" table: REPORT.md's cpu-scale rows cut to claim, number and
verdict, written between two marker lines so the front door never drifts from the report."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from normmatters import io

from .paper_report import claim_rows, interim_note

START = "<!-- glance:start (written by scripts/plot.py --readme; do not edit by hand) -->"
END = "<!-- glance:end -->"


def _short(ours: str) -> str:
    """The number before the report's first ';', without a parenthesis that ';' cut open."""
    head = ours.split(";")[0]
    while head.count("(") > head.count(")"):
        head = head[:head.rindex("(")].rstrip()
    return head


def glance_table(results: Path, rows: tuple | None = None) -> str:
    """The markdown table and its totals line, from the committed runs under ``results``;
    ``rows`` is :func:`claim_rows`'s answer when the caller already has it."""
    cifar, paper, _ = rows or claim_rows(results)
    lines = ["| § | Claim | This project (CIFAR-10, cpu scale) | Verdict |", "|---|---|---|---|"]
    lines += [f"| {r['section']} | {r['claim']} | {_short(r['ours'])} | **{r['verdict']}**{interim_note(r, short=True)} |"
              for r in cifar]
    totals = {scale: ", ".join(f"{v} {k}" for k, v in pd.Series([r["verdict"] for r in rs]).value_counts().items())
              for scale, rs in (("cifar", cifar), ("paper", paper))}
    lines += ["", f"Totals at cpu scale: {totals['cifar']}; at the paper's scale (claims × experiments): {totals['paper']}."]
    return "\n".join(lines)


def with_glance(readme_text: str, table: str) -> str:
    """``readme_text`` with the block between the markers replaced by ``table``."""
    if readme_text.count(START) != 1 or readme_text.count(END) != 1:
        raise ValueError(f"the README needs exactly one {START!r} line and one {END!r} line")
    head, rest = readme_text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{table}\n{END}{tail}"


def write_glance(readme: Path, results: Path, rows: tuple | None = None) -> Path:
    text = with_glance(Path(readme).read_text(), glance_table(results, rows))
    io.atomic_write_bytes(Path(readme), lambda p: Path(p).write_text(text))
    return Path(readme)
