"""docs/results.md's "Final" tables: rebuilt between their marker lines only, and on the committed
runs equal to what the runs give, with each seed's gap the difference of two runs' own final numbers."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import REPO


def _block(sections: str) -> tuple[str, str]:
    return (f'<!-- final-table sections="{sections}" (written by scripts/plot.py --docs; do not edit by hand) -->',
            "<!-- final-table end -->")


def _row(section: str, claim: str, gaps: list[float], seeds: list[int], verdict: str = "HOLDS") -> dict:
    return dict(section=section, claim=claim, paper="≈ 1 %", verdict=verdict,
                paired=dict(of="final error, a − b", seeds=seeds, gaps=gaps, mean=0.5, low=-0.25, high=1.25))


ROWS = [_row("§3", "L1 is as L2", [0.5, -1.0, 2.0], [0, 1, 2]),
        _row("beyond §4", "bf16 survives", [1.5, 0.25], [0, 3]),
        dict(section="§3", claim="no gaps, not listed", paper="–", verdict="NOT RUN")]


def test_each_block_gets_its_sections_rows_and_the_text_around_stays():
    from normmatters.experiments.results_page import with_final_tables

    (s1, end), (s2, _) = _block("§3, §5"), _block("beyond §4")
    text = f"intro\n{s1}\nstale table\n{end}\n\nprose\n{s2}\n{end}\ntail\n"
    out = with_final_tables(text, ROWS)
    head, rest = out.split(s1)
    assert head == "intro\n"
    first, after = rest.split(end, 1)
    assert "stale" not in first and "| §3 | L1 is as L2 | final error, a − b | 3 (0–2) | +0.50, -1.00, +2.00 | " \
        "+0.50 [-0.25, +1.25] | **HOLDS** | ≈ 1 % |" in first
    assert "bf16" not in first and "no gaps" not in first
    assert "| beyond §4 | bf16 survives | final error, a − b | 2 (0, 3) | +1.50, +0.25 |" in after
    assert after.startswith("\n\nprose\n") and after.endswith(f"{end}\ntail\n")
    assert with_final_tables(out, ROWS) == out  # rebuilding is idempotent


@pytest.mark.parametrize("text, match", [
    ("no blocks here", "no final-table block"),
    (f"{_block('§3')[0]}\nno end line\n", "has no"),
    (f"{_block('§9')[0]}\n{_block('§9')[1]}\n", "no judged claim with per-seed gaps in sections §9"),
])
def test_a_page_without_a_usable_block_is_refused_by_name(text, match):
    from normmatters.experiments.results_page import with_final_tables

    with pytest.raises(ValueError, match=match):
        with_final_tables(text, ROWS)


def _final_error(run_dir) -> float:
    epochs = pd.read_parquet(run_dir / "epochs.parquet").drop_duplicates("epoch", keep="last")
    return 100.0 - float(epochs.sort_values("epoch")["test_acc"].iloc[-1])  # test_acc is in percent


@pytest.mark.slow
def test_the_committed_page_lists_what_the_committed_runs_give():
    """`scripts/plot.py results --docs docs/results.md` (make figures) has run since the last runs came in,
    and a listed gap is the two runs' final test errors subtracted (read here from their epoch tables)."""
    from normmatters.experiments.paper_report import claim_rows
    from normmatters.experiments.results_page import with_final_tables

    text = (REPO / "docs" / "results.md").read_text()
    rows = claim_rows(REPO / "results")[0]
    assert with_final_tables(text, rows) == text
    table = pd.read_csv(REPO / "results" / "norms_resnet20_cpu" / "claims.csv").set_index("id")
    gaps = json.loads(table.loc["l1_as_l2", "gaps"])
    for seed, gap in zip(json.loads(table.loc["l1_as_l2", "seeds"]), gaps):
        l1, l2 = (next((REPO / "results" / "norms_resnet20_cpu").glob(f"{arm}_s{seed}-*")) for arm in ("l1", "l2"))
        assert _final_error(l1) - _final_error(l2) == pytest.approx(gap, abs=0.006)
    assert "| §3 | L1 BN is as accurate as L2 BN | final error, l1 − l2 | " in text
