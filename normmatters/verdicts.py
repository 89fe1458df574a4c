"""The words every verdict is written in: the claims tables, the equilibrium rule, the scale check
and REPORT.md share them so a row can be compared (and counted) across all of them."""
HOLDS, FAILS, INCONCLUSIVE = "HOLDS", "DOES NOT HOLD", "INCONCLUSIVE"
NOT_RUN = "NOT RUN"          # fewer seeds than a rule needs
NOT_JUDGED = "NOT JUDGED"    # measured (a benchmark) but no rule fixed
