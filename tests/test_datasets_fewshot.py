"""K-shot sampling (Dassl's algorithm, seeded) and the JSON few-shot cache."""
import json
import random

import pytest

import datasets  # noqa: F401  (registers the readers)
from dassl.config import get_cfg_default
from dassl.data.datasets import build_dataset
from datasets import cache_location
from dassl.utils import UserError
from tools.make_fake_dataset import make_fake_dataset


@pytest.fixture(autouse=True)
def cache_in_dataset_folder(monkeypatch, tmp_path):
    """These tests expect CoOp's place for the cache (the writable dataset folder): no configured one."""
    monkeypatch.delenv(cache_location.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def make_cfg(root, name, *opts):
    cfg = get_cfg_default()
    cfg.merge_from_list(["DATASET.ROOT", str(root), "DATASET.NAME", name, "SEED", 1, *opts])
    return cfg


def rel_paths(items, dataset_dir):
    return [item.impath[len(str(dataset_dir)) + 1:] for item in items]


@pytest.fixture
def pets(tmp_path):
    """5 classes with 6 train / 5 val / 1 test images each."""
    return make_fake_dataset("OxfordPets", tmp_path, num_classes=5, train_per_class=6, val_per_class=5,
                             test_per_class=1)


def shots(root, k, seed=1, *opts):
    return build_dataset(make_cfg(root, "OxfordPets", "DATASET.NUM_SHOTS", k, "SEED", seed, *opts))


def test_k_shot_counts_and_cache_file(pets):
    dataset = shots(pets.parent, 2)
    assert len(dataset.train_x) == 10 and len(dataset.val) == 10 and len(dataset.test) == 5
    cache = pets / "split_fewshot" / "shot_2-seed_1.json"
    content = json.loads(cache.read_text())
    assert set(content) == {"format", "train", "val"}
    assert all(not entry[0].startswith("/") and entry[0].startswith("images/") for entry in content["train"])
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # atomic write leaves no temp file
    assert len(shots(pets.parent, 8).val) == 5 * 4  # val uses min(K, 4) shots
    assert len(shots(pets.parent, 8).train_x) == 5 * 6  # classes smaller than K keep all their images


def test_same_seed_same_sample_different_seed_different(tmp_path):
    first = make_fake_dataset("OxfordPets", tmp_path / "a", num_classes=5, train_per_class=6)
    second = make_fake_dataset("OxfordPets", tmp_path / "b", num_classes=5, train_per_class=6)
    a = rel_paths(shots(first.parent, 2, seed=1).train_x, first)
    b = rel_paths(shots(second.parent, 2, seed=1).train_x, second)
    c = rel_paths(shots(second.parent, 2, seed=2).train_x, second)
    assert a == b
    assert a != c


def test_sample_matches_dassl_algorithm(pets):
    """Same seed -> the images CoOp-family code picks: random.seed(SEED), then per label in order of
    first appearance random.sample(items, K) on train, then min(K, 4) on val."""
    full = shots(pets.parent, 0)
    random.seed(3)
    expected = []
    for label in dict.fromkeys(item.label for item in full.train_x):
        expected += random.sample([i for i in full.train_x if i.label == label], 3)
    got = shots(pets.parent, 3, seed=3).train_x
    assert [i.impath for i in got] == [i.impath for i in expected]


def test_cache_round_trip_is_reused(pets, capsys):
    written = shots(pets.parent, 2)
    cache = pets / "split_fewshot" / "shot_2-seed_1.json"
    capsys.readouterr()
    reread = shots(pets.parent, 2)
    assert "Loading preprocessed few-shot data" in capsys.readouterr().out
    for part in ("train_x", "val"):
        assert [(i.impath, i.label, i.classname) for i in getattr(reread, part)] == \
               [(i.impath, i.label, i.classname) for i in getattr(written, part)]
    # The cache, not a fresh sample, decides what is read.
    content = json.loads(cache.read_text())
    content["train"] = content["train"][:3]
    cache.write_text(json.dumps(content))
    assert len(shots(pets.parent, 2).train_x) == 3


def test_base_new_runs_share_one_cache(pets):
    base = shots(pets.parent, 2, 1, "DATASET.SUBSAMPLE_CLASSES", "base")
    new = shots(pets.parent, 2, 1, "DATASET.SUBSAMPLE_CLASSES", "new")
    assert len(list((pets / "split_fewshot").iterdir())) == 1
    assert len(base.train_x) == 3 * 2 and len(new.train_x) == 2 * 2


@pytest.mark.parametrize("k", [0, -1])
def test_zero_or_negative_shots_mean_full_split(pets, k):
    dataset = shots(pets.parent, k)
    assert len(dataset.train_x) == 30 and len(dataset.val) == 25
    assert not (pets / "split_fewshot").exists()


def test_cache_referencing_missing_files_is_reported(pets):
    shots(pets.parent, 2)
    cache = pets / "split_fewshot" / "shot_2-seed_1.json"
    content = json.loads(cache.read_text())
    content["train"][0][0] = "images/gone.jpg"
    cache.write_text(json.dumps(content))
    with pytest.raises(UserError, match=r"(?s)references 1 image file\(s\).*gone\.jpg.*delete .*shot_2-seed_1.json"):
        shots(pets.parent, 2)


def test_cache_from_another_split_is_refused(pets):
    shots(pets.parent, 2)
    cache = pets / "split_fewshot" / "shot_2-seed_1.json"
    content = json.loads(cache.read_text())
    test_image = json.loads((pets / "split_zhou_OxfordPets.json").read_text())["test"][0]
    content["train"][0] = ["images/" + test_image[0], test_image[1], test_image[2]]
    cache.write_text(json.dumps(content))
    with pytest.raises(UserError, match=r"shot_2-seed_1.json lists 1 train image\(s\) that are not in the current "
                                        r"train split .*Delete it to sample again"):
        shots(pets.parent, 2)


def test_foreign_cache_is_rejected(pets):
    cache = pets / "split_fewshot" / "shot_2-seed_1.json"
    cache.parent.mkdir()
    cache.write_text(json.dumps({"train": []}))
    with pytest.raises(UserError, match="not a few-shot cache written by this code"):
        shots(pets.parent, 2)


def test_imagenet_caches_train_only_and_val_is_test(tmp_path):
    dataset_dir = make_fake_dataset("ImageNet", tmp_path, num_classes=4, train_per_class=5)
    dataset = build_dataset(make_cfg(tmp_path, "ImageNet", "DATASET.NUM_SHOTS", 2))
    assert len(dataset.train_x) == 8 and dataset.val is dataset.test
    assert set(json.loads((dataset_dir / "split_fewshot" / "shot_2-seed_1.json").read_text())) == {"format", "train"}


# ----------------------------------------------------------------------------- NUM_SHOTS above a class's size
def drop_train_images(dataset_dir, label, keep):
    """Keep only `keep` train entries of `label` in the split JSON; returns that class's name."""
    path = dataset_dir / "split_zhou_OxfordPets.json"
    split = json.loads(path.read_text())
    ours = [e for e in split["train"] if e[1] == label]
    split["train"] = [e for e in split["train"] if e[1] != label] + ours[:keep]
    path.write_text(json.dumps(split))
    return ours[0][2]


def warning_lines(out):
    return [line for line in out.splitlines() if "DATASET.NUM_SHOTS" in line]


def test_short_class_is_named_and_real_counts_recorded(pets, capsys):
    short_name = drop_train_images(pets, label=2, keep=3)
    dataset = shots(pets.parent, 5)
    lines = warning_lines(capsys.readouterr().out)
    assert lines == [f"Warning: OxfordPets: DATASET.NUM_SHOTS 5 is more than 1 of 5 classes have; they train on "
                     f"all their images: {short_name!r} 3 (training images per class: min 3, max 5)"]
    assert dataset.shots_per_class == {"min": 3, "max": 5}
    assert len(dataset.train_x) == 4 * 5 + 3
    reread = shots(pets.parent, 5)  # read from the cache: still said, still recorded
    assert len(warning_lines(capsys.readouterr().out)) == 1 and reread.shots_per_class == {"min": 3, "max": 5}
    # Only the classes a run trains on count: the new classes (labels 3, 4) are all complete.
    new = shots(pets.parent, 5, 1, "DATASET.SUBSAMPLE_CLASSES", "new")
    assert new.shots_per_class == {"min": 5, "max": 5}
    assert not warning_lines(capsys.readouterr().out)


def test_enough_images_means_no_warning_and_k_per_class(pets, capsys):
    dataset = shots(pets.parent, 2)
    assert dataset.shots_per_class == {"min": 2, "max": 2}
    assert not warning_lines(capsys.readouterr().out)
    assert shots(pets.parent, 0).shots_per_class is None  # full split: no K-shot sampling


def test_many_short_classes_are_counted_not_all_listed(tmp_path, capsys):
    make_fake_dataset("OxfordPets", tmp_path, num_classes=7, train_per_class=2)
    dataset = shots(tmp_path, 3)
    line, = warning_lines(capsys.readouterr().out)
    assert "is more than 7 of 7 classes have" in line and line.count("' 2") == 5 and ", ... and 2 more" in line
    assert dataset.shots_per_class == {"min": 2, "max": 2}
