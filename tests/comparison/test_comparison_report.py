"""Report pieces: BENCHMARKS.md sections, statistics over seeds, and findings generated from the numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dunemap.comparison.report import (
    gap_finding, markdown_table, replace_section, rf_gap_finding, text_finding, write_section)
from dunemap.comparison.stats import fmt_stat, paired, seed_scores, stat
from dunemap.errors import InputError


def test_section_is_appended_then_replaced_and_neighbours_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    write_section(path, "speed", "speed v1")
    assert path.read_text() == "# Benchmarks\n\n<!-- speed:begin -->\nspeed v1\n<!-- speed:end -->\n"
    path.write_text(path.read_text() + "\nhand-written notes\n")
    write_section(path, "quality", "quality v1")
    write_section(path, "quality", "quality v2\n")
    write_section(path, "speed", "speed v2")
    text = path.read_text()
    assert text == ("# Benchmarks\n\n<!-- speed:begin -->\nspeed v2\n<!-- speed:end -->\n\nhand-written notes\n\n"
                    "<!-- quality:begin -->\nquality v2\n<!-- quality:end -->\n")
    assert not [p for p in tmp_path.iterdir() if p.name != "BENCHMARKS.md"]  # no temporary left behind


@pytest.mark.parametrize("text", ["<!-- quality:begin -->\nx\n",
                                  "<!-- quality:end -->\nx\n<!-- quality:begin -->\n",
                                  "<!-- quality:begin -->\n<!-- quality:begin -->\n<!-- quality:end -->\n"])
def test_broken_markers_are_an_error_and_the_file_is_untouched(tmp_path: Path, text: str) -> None:
    path = tmp_path / "B.md"
    path.write_text(text)
    with pytest.raises(InputError, match=r"B\.md: expected one <!-- quality:begin --> followed by one"):
        write_section(path, "quality", "new")
    assert path.read_text() == text


def test_replace_section_on_empty_text() -> None:
    assert replace_section("", "speed", "x") == "<!-- speed:begin -->\nx\n<!-- speed:end -->\n"


def test_stat_uses_sample_std_and_drops_missing() -> None:
    s = stat([0.5, None, 0.7, float("nan"), 0.6])
    assert s.n == 3 and s.mean == pytest.approx(0.6) and s.std == pytest.approx(0.1)
    one = stat([0.25])
    assert one.n == 1 and math.isnan(one.std) and fmt_stat(one) == "25.0"
    assert fmt_stat(s) == "60.0 ± 10.0" and fmt_stat(stat([])) == "-"
    assert fmt_stat(stat([-0.0001])) == "0.0" and fmt_stat(stat([-0.0001, 0.0001])) == "0.0 ± 0.0"


def test_markdown_table() -> None:
    assert markdown_table(["a", "b"], [["x", "1"]]) == "| a | b |\n| --- | ---: |\n| x | 1 |"


def _rows(scores: dict[str, list[float]], protocol: str = "loro", folds: tuple = ("namib", "mojave")) -> list[dict]:
    """Rows whose per-seed fold-mean mIoU is the given value (two folds at value -/+ 0.05)."""
    rows = []
    for method, values in scores.items():
        for seed, v in enumerate(values):
            for j, fold in enumerate(folds if protocol == "loro" else (None,)):
                offset = (0.05 if j else -0.05) if protocol == "loro" else 0.0
                rows.append({"protocol": protocol, "holdout": fold, "method": method, "seed": seed,
                             "metrics": {"miou": v + offset, "oa": v, "kappa": v, "mf1": v}})
    return rows


def test_seed_scores_average_the_held_out_regions() -> None:
    assert seed_scores(_rows({"rf": [0.3, 0.4]}), "loro", "rf") == pytest.approx({0: 0.3, 1: 0.4})


def test_text_helps_only_when_every_seed_gains_a_point() -> None:
    rows = _rows({"fusion": [0.60, 0.62, 0.61], "fusion_random": [0.55, 0.56, 0.57],
                  "segformer": [0.50, 0.52, 0.50]})
    sentence = text_finding(rows, "loro", "Leave-one-region-out")
    assert sentence.startswith("Leave-one-region-out: the catalog text helps (mIoU of fusion vs random text +5.0")
    assert "(3/3 seeds better)" in sentence


def test_text_without_a_consistent_gain_is_said_not_to_help() -> None:
    rows = _rows({"fusion": [0.60, 0.55, 0.61], "fusion_random": [0.58, 0.57, 0.59],
                  "segformer": [0.50, 0.52, 0.50]}, protocol="in_region")
    sentence = text_finding(rows, "in_region", "In-region")
    assert sentence.startswith("In-region: the catalog text does not help on this synthetic data (")
    p = paired(rows, "in_region", "fusion", "fusion_random")
    assert p.wins == 2 and p.verdict() == "none"
    lower = _rows({"fusion": [0.50, 0.51], "segformer": [0.55, 0.56]})
    assert "does not help on this synthetic data; it scores lower than no text (" in text_finding(lower, "loro", "L")


def test_one_seed_is_too_few_to_judge_the_text() -> None:
    rows = _rows({"fusion": [0.9], "segformer": [0.1]})
    assert "only 1 seed, too few to judge" in text_finding(rows, "loro", "L")
    assert text_finding(_rows({"fusion": [0.9]}), "loro", "L") is None


def test_rf_gap_sentence_compares_with_the_hoped_for_15_points() -> None:
    short = rf_gap_finding(_rows({"fusion": [0.60, 0.62], "rf": [0.50, 0.51]}))
    assert "a difference of +10.5 ± 0.7 points (2/2 seeds better); this falls short of the hoped-for 15" in short
    met = rf_gap_finding(_rows({"fusion": [0.70, 0.72], "rf": [0.50, 0.51]}))
    assert "this reaches the hoped-for 15 points" in met
    assert rf_gap_finding(_rows({"fusion": [0.7]})) is None


def test_sentences_follow_the_data_they_ran_on() -> None:
    rows = _rows({"fusion": [0.50, 0.51], "segformer": [0.55, 0.56]}, protocol="new_scene")
    own = text_finding(rows, "new_scene", "New-scene", "the dataset /data/mine")
    assert "does not help on the dataset /data/mine" in own and "synthetic" not in own


def test_best_network_against_the_forest_and_in_scene_against_new_scene() -> None:
    rows = (_rows({"segformer": [0.70, 0.72], "fusion": [0.60, 0.62], "rf": [0.50, 0.51]}, protocol="new_scene")
            + _rows({"segformer": [0.90, 0.92], "rf": [0.60, 0.61]}, protocol="in_region"))
    sentence = rf_gap_finding(rows, "new_scene")
    assert sentence.startswith("New-scene: the best network, SegFormer, no text, scores 71.0 ± 1.4 mIoU")
    assert "+20.5 ± 0.7 points (2/2 seeds better); this reaches the hoped-for 15 points" in sentence
    gap = gap_finding(rows, ["in_region", "new_scene"])
    assert "Random forest (per pixel) 60.5 ± 0.7 → 50.5 ± 0.7" in gap and "SegFormer, no text 91.0 ± 1.4 → 71.0" in gap
    assert gap_finding(rows, ["new_scene"]) is None
