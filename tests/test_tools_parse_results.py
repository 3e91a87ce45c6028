"""tools/parse_results.py on a made-up output tree: grouping, mean +- std, HM, averages, CSV."""
import csv
import json
import math

import pytest

from tools import parse_results as pr


def _write(root, rel, **record):
    path = root / rel / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def _b2n(trainer, dataset, seed, best, last, shots=16):
    return dict(trainer=trainer, dataset=dataset, protocol="base2novel", seed=seed, shots=shots,
                config_hash=f"hash{seed}",
                best={"epoch": 3, "base": best[0], "new": best[1], "hm": pr.harmonic_mean(*best)},
                last={"epoch": 5, "base": last[0], "new": last[1], "hm": pr.harmonic_mean(*last)})


@pytest.fixture
def tree(tmp_path):
    cfg = "b2n/OxfordPets/shots_16/PromptKD_RSM/vit_b16"
    _write(tmp_path, f"{cfg}/seed1", **_b2n("PromptKD_RSM", "OxfordPets", 1, (90.0, 80.0), (89.0, 81.0)))
    _write(tmp_path, f"{cfg}/seed2", **_b2n("PromptKD_RSM", "OxfordPets", 2, (92.0, 84.0), (91.0, 83.0)))
    _write(tmp_path, f"{cfg}/seed3", **_b2n("PromptKD_RSM", "OxfordPets", 3, (94.0, 82.0), (93.0, 82.0)))
    _write(tmp_path, "b2n/DTD/shots_16/PromptKD_RSM/vit_b16/seed1",
           **_b2n("PromptKD_RSM", "DescribableTextures", 1, (70.0, 50.0), (70.0, 50.0)))
    # same dataset, other trainer: must be its own group
    _write(tmp_path, "b2n/OxfordPets/shots_16/PromptKD/vit_b16/seed1",
           **_b2n("PromptKD", "OxfordPets", 1, (10.0, 20.0), (10.0, 20.0)))
    # same trainer, other config folder (e.g. an omega sweep): its own group
    _write(tmp_path, f"{cfg}_w10/seed1", **_b2n("PromptKD_RSM", "OxfordPets", 1, (1.0, 1.0), (1.0, 1.0)))
    for seed, acc in ((1, 60.0), (2, 64.0)):
        _write(tmp_path, f"xd/DescribableTextures/PromptKD/xd_cfg/seed{seed}",
               trainer="PromptKD", dataset="DescribableTextures", protocol="cross", seed=seed, shots=0,
               config_hash="x", best={"epoch": 2, "accuracy": acc}, last={"epoch": 2, "accuracy": acc - 1})
    (tmp_path / ".hidden" / "seed1").mkdir(parents=True)
    (tmp_path / ".hidden" / "seed1" / "results.json").write_text("{broken")
    return tmp_path


def _group(groups, trainer, dataset, config="vit_b16"):
    (g,) = [g for g in groups if g.key.trainer == trainer and g.key.dataset == dataset
            and g.key.config == config]
    return g


def test_grouping_by_setting_not_seed(tree):
    groups = pr.group_runs(pr.load_results(tree))
    assert len(groups) == 5  # RSM pets, RSM dtd, PromptKD pets, RSM pets w10, cross dtd
    assert _group(groups, "PromptKD_RSM", "OxfordPets").seeds == [1, 2, 3]
    assert _group(groups, "PromptKD_RSM", "OxfordPets", "vit_b16_w10").seeds == [1]


def test_mean_std_and_hm_exact(tree):
    g = _group(pr.group_runs(pr.load_results(tree)), "PromptKD_RSM", "OxfordPets")
    s = pr.summarize_base2new(g, "best")
    assert s["base"] == pytest.approx(92.0)
    assert s["base_std"] == pytest.approx(math.sqrt(8 / 3))  # population std of 90, 92, 94
    assert s["new"] == pytest.approx(82.0)
    assert s["new_std"] == pytest.approx(math.sqrt(8 / 3))
    assert s["hm"] == pytest.approx(2 * 92 * 82 / (92 + 82))
    per_seed = [2 * b * n / (b + n) for b, n in ((90, 80), (92, 84), (94, 82))]
    m = sum(per_seed) / 3
    assert s["hm_std"] == pytest.approx(math.sqrt(sum((h - m) ** 2 for h in per_seed) / 3))
    last = pr.summarize_base2new(g, "last")
    assert last["base"] == pytest.approx(91.0) and last["new"] == pytest.approx(82.0)


def test_cross_summary(tree):
    g = _group(pr.group_runs(pr.load_results(tree)), "PromptKD", "DescribableTextures", "xd_cfg")
    s = pr.summarize_cross(g, "best")
    assert (s["accuracy"], s["accuracy_std"]) == (pytest.approx(62.0), pytest.approx(2.0))
    assert pr.summarize_cross(g, "last")["accuracy"] == pytest.approx(61.0)


def test_markdown_has_partial_average_label_and_no_11_average(tree):
    text = pr.format_markdown(pr.group_runs(pr.load_results(tree)))
    assert "| OxfordPets | 1,2,3 | 92.00 +- 1.63 | 82.00 +- 1.63 |" in text
    assert "Average over present (2 datasets" in text
    assert "Average (11)" not in text
    # average of Pets (92, 82) and DTD (70, 50) -> 81, 66
    assert "| 81.00 | 66.00 | " in text
    assert "Average over targets (1 dataset," in text
    assert "best-on-base checkpoint" in text and "last epoch" in text


def test_eleven_dataset_average(tmp_path):
    for i, name in enumerate(pr.BASE2NEW_DATASETS):
        _write(tmp_path, f"{name}/cfg/seed1", **_b2n("PromptKD", name, 1, (80.0 + i, 70.0), (80.0, 70.0)))
    text = pr.format_markdown(pr.group_runs(pr.load_results(tmp_path)), ("best",))
    assert "| **Average (11)** | | 85.00 | 70.00 |" in text
    assert "Average over present" not in text


def test_csv_and_cli(tree, tmp_path, capsys):
    out = tmp_path / "sub" / "table.csv"
    assert pr.main([str(tree), "--csv", str(out), "--which", "best"]) == 0
    printed = capsys.readouterr()
    assert "### base2novel | PromptKD_RSM | shots 16 | vit_b16 |" in printed.out
    assert "skipping" not in printed.err  # the broken file in a hidden folder is not visited
    rows = list(csv.DictReader(out.open()))
    pets = [r for r in rows if r["trainer"] == "PromptKD_RSM" and r["dataset"] == "OxfordPets"
            and r["config"] == "vit_b16"]
    assert len(pets) == 1 and float(pets[0]["base"]) == 92.0 and pets[0]["seeds"] == "1 2 3"
    assert {r["which"] for r in rows} == {"best"}


def test_bad_input_messages(tmp_path, capsys):
    assert pr.main([str(tmp_path / "nope")]) == 2
    assert "Output root not found" in capsys.readouterr().err
    bad = _write(tmp_path, "run/seed1", trainer="X", dataset="Y")
    with pytest.raises(pr.ResultsError, match="missing keys"):
        pr.load_results(tmp_path, strict=True)
    assert str(bad) in str(pytest.raises(pr.ResultsError, pr.load_result, bad).value)
