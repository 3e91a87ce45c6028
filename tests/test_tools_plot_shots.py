"""tools/plot_shots.py on a made-up output tree in the layout parse_results reads: curves per trainer
over shots (mean +- std over seeds, "full" last), zero-shot references, cross runs left out, the PNG."""
import json
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402

from tools import parse_results as pr  # noqa: E402
from tools import plot_shots  # noqa: E402
from tools.analysis.shots import shot_curves  # noqa: E402

# trainer -> shots -> per-seed (base, new) for seeds 1, 2, 3; shots 0 is the whole training split
ACCURACIES = {
    "PromptKD": {4: [(60.0, 50.0), (62.0, 52.0), (64.0, 48.0)], 16: [(70.0, 60.0), (72.0, 61.0), (74.0, 62.0)],
                 0: [(80.0, 66.0), (80.0, 70.0), (80.0, 68.0)]},
    "PromptKD_RSM": {4: [(61.0, 51.0), (63.0, 53.0), (62.0, 49.0)], 16: [(71.0, 62.0), (73.0, 63.0), (75.0, 61.0)],
                     0: [(81.0, 67.0), (82.0, 69.0), (80.0, 71.0)]},
}


def _write(root, rel, record):
    path = root / rel / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def _record(trainer, seed, shots, base, new, epoch=20, dataset="OxfordPets"):
    entry = {"epoch": epoch, "base": base, "new": new, "hm": pr.harmonic_mean(base, new)}
    return {"trainer": trainer, "dataset": dataset, "protocol": "base2novel", "seed": seed, "shots": shots,
            "config_hash": "abc", "best": entry, "last": {**entry, "base": base - 1.0}}


@pytest.fixture
def tree(tmp_path):
    for trainer, by_shots in ACCURACIES.items():
        for shots, seeds in by_shots.items():
            folder = "full" if shots == 0 else shots
            for seed, (base, new) in enumerate(seeds, start=1):
                _write(tmp_path, f"base2new/OxfordPets/shots_{folder}/{trainer}/vit_b16/seed{seed}",
                       _record(trainer, seed, shots, base, new))
    # zero-shot CLIP: never trained (epoch 0), a reference line
    _write(tmp_path, "zeroshot/OxfordPets/vit_b16", {**_record("ZeroshotCLIP", 0, 0, 55.0, 58.0, epoch=0),
                                                     "config": "vit_b16"})
    # a cross-dataset run: no Base / New, left out
    _write(tmp_path, "xd/DescribableTextures/PromptKD/cfg/seed1",
           {"trainer": "PromptKD", "dataset": "DescribableTextures", "protocol": "cross", "seed": 1, "shots": 0,
            "config_hash": "x", "best": {"epoch": 2, "accuracy": 40.0}, "last": {"epoch": 2, "accuracy": 40.0}})
    return tmp_path


def test_curves_hold_mean_and_std_per_shots_with_full_last(tree):
    curves = shot_curves(pr.load_results(tree))
    assert list(curves) == ["OxfordPets"]
    promptkd, rsm, zeroshot = curves["OxfordPets"]
    assert (promptkd.label, rsm.label) == ("PromptKD", "PromptKD_RSM")
    assert not promptkd.reference and zeroshot.reference and zeroshot.label == "ZeroshotCLIP, no training"
    assert [p.shots for p in promptkd.points] == [4, 16, 0]
    for curve in (promptkd, rsm):
        for point in curve.points:
            seeds = ACCURACIES[curve.label][point.shots]
            base, new = [b for b, _ in seeds], [n for _, n in seeds]
            assert point.seeds == (1, 2, 3)
            assert (point.base, point.base_std) == pytest.approx(pr.mean_std(base))
            assert (point.new, point.new_std) == pytest.approx(pr.mean_std(new))
            assert point.hm == pytest.approx(pr.harmonic_mean(np.mean(base), np.mean(new)))
            assert point.hm_std == pytest.approx(pr.mean_std([pr.harmonic_mean(b, n) for b, n in seeds])[1])
    assert zeroshot.points[0].base == 55.0 and zeroshot.points[0].new == 58.0


def test_last_epoch_entries_on_request(tree):
    promptkd = shot_curves(pr.load_results(tree), which="last")["OxfordPets"][0]
    assert promptkd.points[0].base == pytest.approx(np.mean([b for b, _ in ACCURACIES["PromptKD"][4]]) - 1.0)


def test_several_configurations_of_one_trainer_get_a_curve_each(tree):
    _write(tree, "base2new/OxfordPets/shots_16/PromptKD_RSM/vit_b16_w10/seed1",
           _record("PromptKD_RSM", 1, 16, 10.0, 10.0))
    labels = [c.label for c in shot_curves(pr.load_results(tree))["OxfordPets"]]
    assert labels == ["PromptKD", "PromptKD_RSM (vit_b16)", "PromptKD_RSM (vit_b16_w10)", "ZeroshotCLIP, no training"]


def test_command_writes_the_figure_and_prints_the_points(tree, tmp_path, capsys):
    out = tmp_path / "figs" / "shots.png"
    assert plot_shots.main([str(tree), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "1 run(s) without Base / New accuracies" in stdout
    assert "PromptKD_RSM" in stdout and "full" in stdout and "Base  62.00 +-  0.82" in stdout
    with Image.open(out) as image:
        image.load()
        assert image.size[0] > 1000 and image.size[1] > 300
        assert float(np.asarray(image.convert("L")).std()) > 5.0


def test_no_results_is_one_error_line(tmp_path, capsys):
    assert plot_shots.main([str(tmp_path), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error:") and "no base-to-new results.json" in err[0]
    assert plot_shots.main([str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "s.png").exists()


def test_missing_matplotlib_is_one_error_line(tree, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert plot_shots.main([str(tree), "--out", str(tree / "s.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install -e ".[analysis]"' in err[0] and "matplotlib" in err[0]
