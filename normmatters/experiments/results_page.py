"""docs/results.md's "Final" tables: each judged claim of a group of sections with every seed's paired
gap, their mean and 95 % interval, and the verdict, written between marker lines by
`scripts/plot.py --docs` so the results page's numbers never drift from the runs (the prose around
the tables is written by hand and reads them)."""
from __future__ import annotations

import re
from pathlib import Path

from normmatters import io

from ..paired import gap_text, number_text
from .paper_report import claim_rows, verdict_cell

# a block: START naming the sections it lists (exactly as in REPORT.md's § column), its table, END
START = re.compile(r'<!-- final-table sections="([^"]+)" \(written by scripts/plot\.py --docs; do not edit by hand\) -->')
END = "<!-- final-table end -->"


def _seeds_cell(seeds: list) -> str:
    """'7 (0–6)' for consecutive seeds, else '4 (0, 2, 5, 9)'."""
    ints = [int(s) for s in seeds]
    if ints == list(range(ints[0], ints[0] + len(ints))) and len(ints) > 2:
        return f"{len(ints)} ({ints[0]}–{ints[-1]})"
    return f"{len(ints)} ({', '.join(map(str, ints))})"


def final_table(rows: list[dict], sections: list[str]) -> str:
    """The markdown table of the rows of ``sections`` (claim_rows' cpu rows) that have per-seed gaps."""
    chosen = [r for r in rows if r["section"] in sections and r.get("paired")]
    if not chosen:
        raise ValueError(f"results page: no judged claim with per-seed gaps in sections {', '.join(sections)}")
    lines = ["| § | Claim | Gap | Seeds | Gaps by seed | Mean [95 % CI] | Verdict (our rule) | Paper |",
             "|---|---|---|---|---|---|---|---|"]
    for r in chosen:
        p = r["paired"]
        gaps = ", ".join(number_text(g, 2, True) for g in p["gaps"])
        if p.get("n_failed") is not None:
            gaps += f" ({p['n_failed']} of {len(p['gaps'])} fail)"
        lines.append(f"| {r['section']} | {r['claim']} | {p['of']} | {_seeds_cell(p['seeds'])} | {gaps} | "
                     f"{gap_text(p['mean'], p['low'], p['high'])} | {verdict_cell(r)} | {r['paper']} |")
    return "\n".join(lines)


def with_final_tables(text: str, rows: list[dict]) -> str:
    """``text`` with the table of every START … END block rebuilt from ``rows``."""
    starts = list(START.finditer(text))
    if not starts:
        raise ValueError(f"the results page has no final-table block (a line like {START.pattern!r})")
    out, pos = [], 0
    for m in starts:
        end = text.find(END, m.end())
        if end < 0 or any(m.end() < s.start() < end for s in starts):
            raise ValueError(f"final-table block {m.group(1)!r} has no {END!r} line before the next block")
        sections = [s.strip() for s in m.group(1).split(",")]
        out += [text[pos:m.end()], "\n", final_table(rows, sections), "\n"]
        pos = end
    return "".join(out) + text[pos:]


def write_final_tables(page: Path, results: Path, rows: tuple | None = None) -> Path:
    text = with_final_tables(Path(page).read_text(), (rows or claim_rows(results))[0])
    io.atomic_write_bytes(Path(page), lambda p: Path(p).write_text(text))
    return Path(page)
