"""results.json helpers: the config hash identifies a configuration across seeds and output folders."""
from dassl.config import get_cfg_default
from trainers.config import extend_cfg
from trainers.results import config_hash, harmonic_mean, read_results, write_results


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
