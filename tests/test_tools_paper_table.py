"""docs/ame_paper_tables.yaml (the paper's numbers: their arithmetic, the known inconsistencies) and
tools/paper_table.py (paper beside ours) on made-up results.json files in the folders the runs write."""
import json
import math

import pytest
import yaml

from scripts import paper_tables
from scripts.paper_tables import AVERAGE, PAPER_NUMBERS, TABLE_DATASETS, Row, load_paper_numbers, result_folder
from scripts.runs import ScriptError
from tools import paper_table as pt
from tools.parse_results import harmonic_mean


# ----------------------------------------------------------------------------- the data file

def _failing_checks(table):
    """(row, column, metric, recomputed) of every number of the data file that its own table contradicts:
    a dataset's HM against its Base and New, an average against the mean of the datasets (Table 1's HM:
    against the harmonic mean of the averaged Base and New).

    Tolerances: what two-decimal rounding allows when the paper computed from unrounded numbers. A mean of
    values each rounded by at most 0.005, itself rounded: 0.01. An HM from Base and New rounded by at most
    0.005 each (the HM's partial derivatives sum to at most 2), itself rounded: 0.015."""
    paper = load_paper_numbers(table)
    datasets = [c for c in paper.columns if c != AVERAGE]
    failing = set()
    for row, cells in paper.values.items():
        means = [sum(cells[d][i] for d in datasets) / len(datasets) for i in range(len(paper.metrics))]
        for i, metric in enumerate(paper.metrics):
            if metric != "hm" and abs(cells[AVERAGE][i] - means[i]) > 0.01 + 1e-9:
                failing.add((row, AVERAGE, metric, round(means[i], 2)))
        if paper.metrics == ("base", "new", "hm"):
            hm = harmonic_mean(cells[AVERAGE][0], cells[AVERAGE][1])
            if abs(cells[AVERAGE][2] - hm) > 0.015:
                failing.add((row, AVERAGE, "hm", round(hm, 2)))
            for d in datasets:
                hm = harmonic_mean(cells[d][0], cells[d][1])
                if abs(cells[d][2] - hm) > 0.015:
                    failing.add((row, d, "hm", round(hm, 2)))
    return failing


@pytest.mark.parametrize("table", ["table1", "table2"])
def test_every_number_the_paper_contradicts_is_listed_and_nothing_else(table):
    listed = {(e["row"], e["column"], e["metric"], e["recomputed"])
              for e in load_paper_numbers(table).inconsistencies}
    assert _failing_checks(table) == listed


def test_the_known_paper_inconsistency_is_the_cross_dataset_clip_row():
    assert _failing_checks("table1") == set()
    assert _failing_checks("table2") == {("CLIP", AVERAGE, "accuracy", 67.72)}


def test_data_file_matches_the_rows_and_datasets_of_the_code():
    data = yaml.safe_load(PAPER_NUMBERS.read_text(encoding="utf-8"))
    assert "AME" in data["paper"]
    for table in ("table1", "table2"):
        paper = load_paper_numbers(table)
        assert paper.citation.startswith(f"Table {table[-1]}")
        assert list(paper.values) == [row.key for row in paper_tables.table_rows(table)]
        assert sorted(c for c in paper.columns if c != AVERAGE) == sorted(TABLE_DATASETS[table])
        assert len(paper.printed_columns) == len(paper.columns)


def test_headline_numbers_as_the_paper_states_them_in_its_text():
    t1, t2 = load_paper_numbers("table1").values, load_paper_numbers("table2").values
    assert t1["PKD_RSM_16"][AVERAGE] == (83.31, 77.30, 80.19)
    assert t1["PromptKD_full"][AVERAGE] == (85.21, 79.13, 82.06)
    assert t1["PKD_RSM_16"]["oxford_flowers"][2] == 89.32 and t1["PKD_RSM_16"]["eurosat"][2] == 71.72
    assert t2["PKD_RSM_full"][AVERAGE] == (70.76,) and t2["PromptKD_16"][AVERAGE] == (64.78,)


def test_a_broken_data_file_is_one_error(tmp_path):
    broken = tmp_path / "numbers.yaml"
    broken.write_text("tables: {table1: {metrics: [base]}}\n")
    with pytest.raises(ScriptError, match="cannot read table1 from"):
        load_paper_numbers("table1", broken)


# ----------------------------------------------------------------------------- the writer

def _row(table, key):
    (row,) = [r for r in paper_tables.table_rows(table) if r.key == key]
    return row


def _write(table, key, dataset, seed, root, protocol, best, last=None):
    """A results.json of the row's scored run, where the protocol script writes it."""
    step = _row(table, key).scored
    folder = result_folder(step, dataset, seed, {"OUTPUT_ROOT": str(root)})
    folder.mkdir(parents=True, exist_ok=True)
    record = dict(trainer=step.trainer, dataset=dataset, protocol=protocol, seed=int(seed or 0), shots=16,
                  config_hash="h", best=best, last=last or best)
    (folder / "results.json").write_text(json.dumps(record))


def _b2n(base, new):
    return {"epoch": 20, "base": base, "new": new, "hm": harmonic_mean(base, new)}


def _line(markdown, dataset, method):
    """The cells of the table line of (dataset, method)."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 2 and cells[0] == dataset and cells[1] == method:
            return cells
    raise AssertionError(f"no line {dataset} / {method}")


def test_table1_mean_std_difference_and_missing_cells(tmp_path):
    _write("table1", "PromptKD_16", "oxford_pets", "1", tmp_path, "base2novel", _b2n(90.0, 92.0))
    _write("table1", "PromptKD_16", "oxford_pets", "2", tmp_path, "base2novel", _b2n(92.0, 96.0))
    _write("table1", "CLIP", "dtd", None, tmp_path, "base2novel", _b2n(50.0, 60.0))
    text = pt.paper_table("table1", str(tmp_path), {}, seeds=("1", "2", "3"))

    cells = _line(text, "OxfordPets", "PromptKD † (16 shots)")
    # n | Base paper, ours, diff | New ... | HM ... | note
    assert cells[2] == "2"
    assert cells[3:6] == ["90.13", "91.00 +- 1.00", f"{91.0 - 90.13:+.2f}"]
    assert cells[6:9] == ["92.54", "94.00 +- 2.00", f"{94.0 - 92.54:+.2f}"]
    hm = harmonic_mean(91.0, 94.0)
    hm_std = abs(harmonic_mean(90, 92) - harmonic_mean(92, 96)) / 2
    assert cells[9:12] == ["91.32", f"{hm:.2f} +- {hm_std:.2f}", f"{hm - 91.32:+.2f}"]

    clip = _line(text, "DTD", "CLIP (zero-shot)")
    assert clip[2] == "1" and clip[4] == "50.00 +- 0.00" and clip[5] == f"{50 - 53.24:+.2f}"
    missing = _line(text, "OxfordPets", "PKD + RSM ‡ (full)")
    assert missing[2] == "0" and missing[3] == "96.38" and missing[4:6] == ["-", "-"]
    average = _line(text, "**Average**", "PromptKD † (16 shots)")
    assert average[2] == "1/11 datasets" and average[4] == "-" and average[3] == "80.36"


def test_table1_average_follows_the_paper_rule(tmp_path):
    values = {d: (60.0 + i, 70.0 + 2 * i) for i, d in enumerate(TABLE_DATASETS["table1"])}
    for dataset, (base, new) in values.items():
        _write("table1", "PKD_RSM_16", dataset, "1", tmp_path, "base2novel", _b2n(base, new))
    text = pt.paper_table("table1", str(tmp_path), {})
    base = sum(b for b, _ in values.values()) / 11
    new = sum(n for _, n in values.values()) / 11
    cells = _line(text, "**Average**", "PKD + RSM † (16 shots)")
    assert cells[2] == "11/11 datasets"
    assert cells[4] == f"{base:.2f}" and cells[5] == f"{base - 83.31:+.2f}"
    assert cells[7] == f"{new:.2f}"
    assert cells[10] == f"{harmonic_mean(base, new):.2f}" and cells[11] == f"{harmonic_mean(base, new) - 80.19:+.2f}"


def test_table2_accuracy_flag_and_last_entry(tmp_path):
    for seed, acc in (("1", 40.0), ("2", 44.0), ("3", 48.0)):
        _write("table2", "CoOp", "dtd", seed, tmp_path, "evaluation",
               {"epoch": 50, "accuracy": acc}, {"epoch": 50, "accuracy": acc})
        _write("table2", "PKD_RSM_16", "dtd", seed, tmp_path, "cross",
               {"epoch": 3, "accuracy": acc + 10}, {"epoch": 20, "accuracy": acc + 5})
    best = pt.paper_table("table2", str(tmp_path), {})
    coop = _line(best, "DTD", "CoOp")
    assert coop[2:6] == ["3", "41.92", f"44.00 +- {math.sqrt(32 / 3):.2f}", f"{44 - 41.92:+.2f}"]
    assert _line(best, "DTD", "PKD + RSM † (16 shots)")[4].startswith("54.00")
    last = pt.paper_table("table2", str(tmp_path), {}, which="last")
    assert _line(last, "DTD", "PKD + RSM † (16 shots)")[4].startswith("49.00")
    clip = _line(best, "Caltech", "CLIP (zero-shot)")
    assert clip[3] == "96.84" and "inconsistent" in clip[-1]
    assert "cells average 67.72" in best.split("Notes on the paper's numbers")[1].replace("\n", " ")
    assert _line(best, "**Avg.**", "CoOp")[4] == "-"


def test_a_record_of_the_wrong_kind_is_skipped_with_a_warning(tmp_path, capsys):
    _write("table2", "PromptKD_16", "dtd", "1", tmp_path, "base2novel", _b2n(1.0, 2.0))
    text = pt.paper_table("table2", str(tmp_path), {})
    assert _line(text, "DTD", "PromptKD † (16 shots)")[4] == "-"
    assert "does not hold one accuracy" in capsys.readouterr().err


def test_a_row_not_run_says_why(tmp_path, monkeypatch):
    rows = tuple(Row(r.key, r.label, not_run="no config for it here") if r.key == "MaPLe" else r
                 for r in paper_tables.table_rows("table2"))
    monkeypatch.setitem(paper_tables.TABLES, "table2", rows)
    cells = _line(pt.paper_table("table2", str(tmp_path), {}), "UCF", "MaPLe")
    assert cells[3] == "68.69" and cells[4] == "-" and cells[-1] == "not run: no config for it here"


def test_command_line_writes_the_file(tmp_path, capsys):
    _write("table2", "CLIP", "eurosat", None, tmp_path, "cross", {"epoch": 0, "accuracy": 47.0})
    out = tmp_path / "tables" / "t2.md"
    assert pt.main([str(tmp_path), "--table", "2", "--out", str(out)]) == 0
    assert _line(out.read_text(), "EuroSAT", "CLIP (zero-shot)")[4] == "47.00 +- 0.00"
    assert f"Written to {out}" in capsys.readouterr().out
    assert pt.main([str(tmp_path / "none"), "--table", "1"]) == 2
