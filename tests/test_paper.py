"""The papers' numbers are data: data/paper_results.csv parses, covers the sections it
claims (data/README.md), holds the printed numbers in the printed cells, and a bad file or an
unknown filter is refused with a message that says what is allowed."""
import math

import pytest

from dpm_lab.reporting.paper import COLUMNS, SECTIONS, load_paper_results, paper_results_path


@pytest.fixture(scope="module")
def paper():
    return load_paper_results()


def cell(paper, section, row, column, metric, **match):
    """The values of one table cell (several when a row label repeats, e.g. '+ SP')."""
    rows = paper[(paper.section == section) & (paper.row == row) & (paper.column == column)
                 & (paper.metric == metric)]
    for key, wanted in match.items():
        rows = rows[rows[key] == wanted]
    return list(rows.value)


def test_every_row_parses_with_a_finite_value_and_a_known_section(paper):
    assert list(paper.columns) == list(COLUMNS)
    assert len(paper) > 100
    assert all(math.isfinite(v) for v in paper.value)
    assert set(paper.section) <= set(SECTIONS)
    assert (paper.source != "").all() and (paper.evidence != "").all()


def test_each_results_section_has_rows(paper):
    assert {"4.1", "4.2", "4.3", "5.5"} <= set(paper.section)


def test_printed_numbers_sit_in_their_printed_cells(paper):
    # §4.1: "| OTOv2 + SR (full DPM) | **25.8%** (−0.7) | 4.8% | **93.8%** (+0.4) |"
    assert cell(paper, "4.1", "OTOv2 + SR (full DPM)", "FLOPs", "flops_remaining") == [25.8]
    assert cell(paper, "4.1", "OTOv2 + SR (full DPM)", "Top-1", "top1_change") == [0.4]
    # §4.2: "| + SP | 46.32% (−0.1 as printed) | 49.69% (−3.21) | 93.96% (+0.12) |", the row
    # under "DepGraph (group pruner + sparse learning)": the change is kept as printed.
    assert cell(paper, "4.2", "+ SP", "FLOPs", "flops_remaining_change",
                method="DepGraph + SP") == [-0.1]
    # §4.3: "| + SR | **9.79%** (−0.07) | **1.95%** (−0.03) | **91.74%** (+0.24) |"
    assert cell(paper, "4.3", "+ SR", "Params", "params_remaining") == [1.95]
    # §5.5, ResNet-56 / CIFAR-10: "| **TPP (LR 1e-2)** | ... | **89.63 (0.10)** | ..." under
    # layer-wise PR 0.9: the mean is the value, the std goes to the note.
    tpp = paper[(paper.row == "TPP (LR 1e-2)") & (paper.column == "0.9")]
    assert list(tpp.value) == [89.63] and "std 0.10" in tpp.note.iloc[0]
    # §5.5, ImageNet-1K: "| ResNet50 | GReg-2 | 76.13 | 74.93 | 1.20 | 2.56× |"
    assert 74.93 in cell(paper, "5.5", "ResNet50 | GReg-2", "Pruned", "top1")


def test_filters_select_rows_and_refuse_unknown_values(paper):
    otov2 = load_paper_results(framework="OTOv2", metric="top1")
    assert len(otov2) > 0 and set(otov2.framework) == {"OTOv2"} and set(otov2.metric) == {"top1"}
    with pytest.raises(ValueError, match=r"unknown framework 'OTOv3'; known: .*DepGraph.*TPP"):
        load_paper_results(framework="OTOv3")
    with pytest.raises(ValueError, match=r"unknown metric 'accuracy'; known: .*top1"):
        load_paper_results(metric="accuracy")


def test_a_bad_value_or_a_missing_column_is_refused(tmp_path):
    lines = paper_results_path().read_text(encoding="utf-8").splitlines()
    header, first = lines[0], lines[1]  # first: section 4.1, "Baseline (unpruned)", FLOPs
    bad = tmp_path / "bad_value.csv"
    bad.write_text("\n".join([header, first.replace(",100,percent,", ",100%,percent,")]) + "\n")
    with pytest.raises(ValueError, match=r"line 2 \(section 4.1, row 'Baseline \(unpruned\)'.*"
                                         r"'100%' is not a finite plain number; allowed"):
        load_paper_results(bad)
    no_unit = tmp_path / "no_unit.csv"
    no_unit.write_text(header.replace(",unit,", ",units,") + "\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) unit; the columns are"):
        load_paper_results(no_unit)


def test_a_missing_file_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr("dpm_lab.training.paths.PACKAGE_CHECKOUT", tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "elsewhere" / "data")):
        load_paper_results()
