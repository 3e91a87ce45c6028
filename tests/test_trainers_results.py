"""results.json helpers: the config hash identifies a configuration across seeds and output folders."""
import json

import pytest

from dassl.config import get_cfg_default
from trainers.config import extend_cfg
from trainers.results import config_hash, harmonic_mean, read_results, write_results, write_zeroshot_results


def _cfg(**overrides):
    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_list([item for pair in overrides.items() for item in pair])
    return cfg


def test_config_hash_ignores_seed_and_folders_but_not_method_keys():
    first = _cfg(SEED=1, OUTPUT_DIR="out/seed1", **{"DATASET.ROOT": "/data/a"})
    second = _cfg(SEED=2, OUTPUT_DIR="out/seed2", **{"DATASET.ROOT": "/data/b"})
    changed = _cfg(SEED=1, OUTPUT_DIR="out/seed1", **{"TRAINER.RSM.WEIGHT": 10.0})
    assert config_hash(first) == config_hash(second)
    assert config_hash(first) != config_hash(changed)
    assert first.SEED == 1 and first.OUTPUT_DIR == "out/seed1"  # the caller's config is untouched


def test_write_then_read_round_trip(tmp_path):
    results = {"protocol": "base2novel", "best": {"epoch": 3, "base": 80.0, "new": 60.0,
                                                  "hm": harmonic_mean(80.0, 60.0)}}
    path = write_results(str(tmp_path / "run"), results)
    assert read_results(str(tmp_path / "run")) == results == read_results(path)
    assert abs(results["best"]["hm"] - 2 * 80 * 60 / 140) < 1e-12


def _zeroshot_part(root, part, accuracy):
    folder = root / part
    folder.mkdir(parents=True)
    (folder / "zeroshot.json").write_text(json.dumps(
        {"trainer": "ZeroshotCLIP", "dataset": "OxfordPets", "accuracy": accuracy, "config_hash": "abc"}))


def test_write_zeroshot_results_combines_the_parts(tmp_path):
    root = tmp_path / "zs"
    _zeroshot_part(root, "base", 80.0)
    with pytest.raises(FileNotFoundError, match="new"):
        write_zeroshot_results(str(root), "base2new")
    assert not (root / "results.json").exists()
    _zeroshot_part(root, "new", 60.0)
    path, entry = write_zeroshot_results(str(root), "base2new")
    record = read_results(path)
    assert record["protocol"] == "base2novel" and record["seed"] == 0 and record["shots"] == 0
    assert record["best"] == record["last"] == entry
    assert entry == {"epoch": 0, "base": 80.0, "new": 60.0, "hm": round(2 * 80 * 60 / 140, 4)}

    _zeroshot_part(root, "all", 70.5)
    _, entry = write_zeroshot_results(str(root), "all")
    assert entry == {"epoch": 0, "accuracy": 70.5} and read_results(str(root))["protocol"] == "cross"
    with pytest.raises(ValueError, match="mode"):
        write_zeroshot_results(str(root), "xd")
