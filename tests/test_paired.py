"""The paired-gap interval and its text, against values worked out by hand."""
import math

from normmatters.paired import gap_stats, gap_text, t_interval

T_975_2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (tables)


def test_gap_stats_three_seeds():
    mean, sd, low, high = gap_stats([1.0, 2.0, 4.0])
    sd_hand = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    half = T_975_2 * sd_hand / math.sqrt(3)
    assert math.isclose(mean, 7 / 3) and math.isclose(sd, sd_hand)
    assert math.isclose(low, 7 / 3 - half) and math.isclose(high, 7 / 3 + half)


def test_one_seed_and_none_have_no_interval():
    mean, sd, low, high = gap_stats([0.5])
    assert mean == 0.5 and all(math.isnan(x) for x in (sd, low, high))
    assert all(math.isnan(x) for x in gap_stats([]))
    low, high = t_interval([1.0, 2.0], [1.0, 1.0], [1, 2])
    assert math.isnan(low[0]) and math.isclose(high[1], 2.0 + 12.706204736174707 / math.sqrt(2))


def test_gap_text():
    assert gap_text(0.123, -0.3, 0.54) == "+0.12 [-0.30, +0.54]"
    assert gap_text(-1.0, -2.5, 0.25, digits=1) == "-1.0 [-2.5, +0.2]"
    assert gap_text(0.5, math.nan, math.nan) == "+0.50 (no CI: one seed)"
    assert gap_text(math.nan, math.nan, math.nan) == "–"


def test_number_text():
    from normmatters.paired import number_text

    assert number_text(38.5) == "38.50" and number_text(3) == "3.00"
    assert number_text(1.5, 1, sign=True) == "+1.5" and number_text(-0.25, sign=True) == "-0.25"
    assert number_text(None) == "–" and number_text(math.nan) == "–" and number_text(math.inf) == "–"
