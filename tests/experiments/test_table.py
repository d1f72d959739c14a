"""Paper-format tables: flattening run results, mean ± sd, rendering and parsing back."""

import math

import pytest

from sam_mix_monai.experiments.table import (
    flatten_results,
    result_variants,
    format_mean_sd,
    paper_table,
    parse_markdown_table,
    parse_mean_sd,
)

RESULTS = {
    "test": {"metrics": {"slice2d_dice": 0.9, "slice2d_hd": 10.0, "volume3d_dice": 0.92, "volume3d_hd95": 8.0}},
    "cross_domain:phantom_b": {"metrics": {"slice2d_dice": 0.6, "slice2d_hd": 30.0, "volume3d_dice": None}},
    "timing": {"train_seconds": 1.0},
}


def test_flatten_results_maps_test_and_first_cross_domain_set():
    flat = flatten_results(RESULTS)
    assert flat["in/slice2d_dice"] == 0.9 and flat["cross/slice2d_hd"] == 30.0
    assert "cross/volume3d_dice" not in flat  # None is missing, not 0
    assert not any(k.startswith("timing") for k in flat)


def test_oracle_point_variant_is_its_own_row():
    res = {**RESULTS, "test (oracle point)": {"metrics": {"slice2d_dice": 0.95}},
           "cross_domain:phantom_b (oracle point)": {"metrics": {"slice2d_dice": 0.7}}}
    assert result_variants(res) == ["oracle point"] and result_variants(RESULTS) == []
    assert flatten_results(res) == flatten_results(RESULTS)  # the main row ignores the variant
    assert flatten_results(res, variant="oracle point") == {"in/slice2d_dice": 0.95, "cross/slice2d_dice": 0.7}


def test_mean_sd_formatting():
    assert format_mean_sd([0.8, 0.9]) == "0.850 ± 0.071"
    assert format_mean_sd([0.8]) == "0.800"
    assert format_mean_sd([math.nan]) == "-"
    assert format_mean_sd([1.0, math.nan, 3.0], 1) == "2.0 ± 1.4"


def test_paper_table_round_trip():
    rows = {"U-Net-50": [flatten_results(RESULTS)], "SAM-Mix-50": [{"in/slice2d_dice": 0.5}, {"in/slice2d_dice": 0.7}]}
    text = paper_table(rows, "slice2d")
    parsed = parse_markdown_table("intro\n\n" + text + "\n\nafter")
    assert [r["model"] for r in parsed] == ["U-Net-50", "SAM-Mix-50"]
    assert parse_mean_sd(parsed[0]["in-domain Dice"]) == (0.9, None)
    m, sd = parse_mean_sd(parsed[1]["in-domain Dice"])
    assert m == pytest.approx(0.6) and sd == pytest.approx(0.141, abs=1e-3)
    assert math.isnan(parse_mean_sd(parsed[1]["cross-domain HD (px)"])[0])
    vol = parse_markdown_table(paper_table(rows, "volume3d", domain_titles={"in": "phantom a"}))
    assert vol[0]["phantom a 3D Dice"] == "0.920" and vol[0]["cross-domain 3D Dice"] == "-"


def test_bad_protocol_and_missing_table():
    with pytest.raises(ValueError, match="protocol"):
        paper_table({}, "dice3d")
    with pytest.raises(ValueError, match="no Markdown table"):
        parse_markdown_table("no table here")
