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


# ----------------------------------------------------------------------------- every protocol

def _acc(trainer, dataset, protocol, seed, best, last, **extra):
    return dict(trainer=trainer, dataset=dataset, protocol=protocol, seed=seed, shots=16, config_hash="h",
                best={"epoch": 4, "accuracy": best}, last={"epoch": 5, "accuracy": last}, **extra)


@pytest.fixture
def every_protocol(tmp_path):
    """Training runs of base2new and fewshot, evaluation records of both trainer families, a zero-shot run."""
    for seed, (base, new) in ((1, (80.0, 60.0)), (2, (84.0, 64.0))):
        record = _b2n("CoOp", "OxfordPets", seed, (base, new), (base - 1, new - 1))
        record.update(protocol="base2new", subsample="base", split="test")
        _write(tmp_path, f"base2new/train_base/oxford_pets/shots_16/CoOp/ctx/seed{seed}", **record)
    for seed, acc in ((1, 70.0), (2, 74.0)):
        _write(tmp_path, f"fewshot/oxford_pets/shots_4/CoOp/ctx/seed{seed}",
               **_acc("CoOp", "OxfordPets", "fewshot", seed, acc, acc - 2, subsample="all", split="test"))
        _write(tmp_path, f"fewshot/dtd/shots_4/CoOp/ctx/seed{seed}",
               **_acc("CoOp", "DescribableTextures", "fewshot", seed, acc - 20, acc - 20,
                      subsample="all", split="test"))
    for part, acc in (("base", 81.0), ("new", 61.0)):
        entry = {"epoch": 10, "accuracy": acc}
        _write(tmp_path, f"base2new/test_{part}/oxford_pets/shots_16/CoOp/ctx/seed1",
               trainer="CoOp", dataset="OxfordPets", protocol="evaluation", seed=1, shots=16, config_hash="e",
               best=entry, last=entry, eval_only=True, subsample=part, split="test", model_dir="m")
    entry = {"epoch": 3, "base": 90.0, "new": 70.0, "hm": pr.harmonic_mean(90.0, 70.0)}
    _write(tmp_path, "eval/oxford_pets/PromptKD/cfg/seed1", trainer="PromptKD", dataset="OxfordPets",
           protocol="evaluation", seed=1, shots=16, config_hash="d", best=entry, last=entry, eval_only=True,
           evaluated_protocol="base2novel", model_dir="m")
    zs = {"epoch": 0, "base": 70.0, "new": 75.0, "hm": pr.harmonic_mean(70.0, 75.0)}
    _write(tmp_path, "zeroshot/oxford_pets/ZeroshotCLIP/vit_b16", trainer="ZeroshotCLIP", dataset="OxfordPets",
           protocol="base2novel", seed=0, shots=0, config_hash="0123abcd", best=zs, last=zs)
    return tmp_path


def test_every_protocol_is_tabled_in_its_own_group(every_protocol):
    groups = pr.group_runs(pr.load_results(every_protocol, strict=True))
    keys = {(g.key.protocol, g.key.evaluated, g.key.trainer, g.key.dataset) for g in groups}
    assert keys == {("base2new", "", "CoOp", "OxfordPets"), ("fewshot", "", "CoOp", "OxfordPets"),
                    ("fewshot", "", "CoOp", "DescribableTextures"),
                    ("evaluation", "subsample base, split test", "CoOp", "OxfordPets"),
                    ("evaluation", "subsample new, split test", "CoOp", "OxfordPets"),
                    ("evaluation", "base2novel", "PromptKD", "OxfordPets"),
                    ("base2novel", "", "ZeroshotCLIP", "OxfordPets")}
    zeroshot = [g for g in groups if g.key.trainer == "ZeroshotCLIP"]
    assert zeroshot[0].key.config == "vit_b16"  # its run folder, not the config hash

    text = pr.format_markdown(groups, ("best",))
    assert "### base2new | CoOp | shots 16 | ctx | best-on-base checkpoint" in text
    assert "| OxfordPets | 1,2 | 82.00 +- 2.00 | 62.00 +- 2.00 |" in text
    assert "### fewshot | CoOp | shots 16 | ctx |" in text
    assert "| OxfordPets | 1,2 | 72.00 +- 2.00 |" in text and "| DescribableTextures | 1,2 | 52.00 +- 2.00 |" in text
    assert "| Average (2 datasets) | | 62.00 |" in text  # no source dataset is left out of a few-shot average
    assert "### evaluation (subsample new, split test) | CoOp | shots 16 | ctx | evaluated checkpoint" in text
    assert "| OxfordPets | 1 | 61.00 +- 0.00 |" in text
    assert "### evaluation (base2novel) | PromptKD |" in text
    assert "| OxfordPets | 1 | 90.00 +- 0.00 | 70.00 +- 0.00 |" in text
    assert "### base2novel | ZeroshotCLIP | shots 0 | vit_b16 |" in text
    assert "0123abcd" not in text


def test_every_protocol_in_the_csv(every_protocol, tmp_path):
    groups = pr.group_runs(pr.load_results(every_protocol))
    rows = pr.csv_rows(groups, ("last",))
    fewshot = [r for r in rows if r["protocol"] == "fewshot" and r["dataset"] == "OxfordPets"]
    assert len(fewshot) == 1 and fewshot[0]["accuracy"] == 70.0 and fewshot[0]["base"] == ""
    evaluations = sorted((r["evaluated"], r["accuracy"] or r["hm"]) for r in rows if r["protocol"] == "evaluation")
    assert evaluations == [("base2novel", round(pr.harmonic_mean(90.0, 70.0), 4)),
                           ("subsample base, split test", 81.0), ("subsample new, split test", 61.0)]
    assert pr.main([str(every_protocol), "--csv", str(tmp_path / "t.csv")]) == 0
