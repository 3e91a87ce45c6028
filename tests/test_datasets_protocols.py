"""CoOp semantics (protocol None), PromptKD's base2novel and cross protocols, base_only, base/new
subsampling, the held-out split of model selection."""
import os
from types import SimpleNamespace

import pytest

import datasets  # noqa: F401  (registers the readers)
from dassl.config import get_cfg_default
from dassl.data.datasets import build_dataset
from dassl.utils import UserError
from tools.make_fake_dataset import make_fake_dataset


def make_cfg(root, name, *opts):
    cfg = get_cfg_default()
    cfg.merge_from_list(["DATASET.ROOT", str(root), "DATASET.NAME", name, "SEED", 1, *opts])
    return cfg


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """OxfordPets with 5 classes (base 3 / new 2): 2 train, 1 val, 2 test images per class."""
    root = tmp_path_factory.mktemp("data")
    make_fake_dataset("OxfordPets", root, num_classes=5)
    make_fake_dataset("ImageNet", root, num_classes=5)
    make_fake_dataset("ImageNetA", root, num_classes=4)
    return root


def labels(items):
    return sorted({item.label for item in items})


def build(root, protocol=None, *opts, name="OxfordPets"):
    return build_dataset(make_cfg(root, name, *opts), protocol)


def test_coop_semantics_keep_the_real_val_split(root):
    dataset = build(root)
    assert (len(dataset.train_x), len(dataset.val), len(dataset.test)) == (10, 5, 10)
    assert set(i.impath for i in dataset.val).isdisjoint(i.impath for i in dataset.test)


def test_subsample_base_and_new(root):
    full = build(root)
    base = build(root, None, "DATASET.SUBSAMPLE_CLASSES", "base")
    new = build(root, None, "DATASET.SUBSAMPLE_CLASSES", "new")
    assert base.classnames == full.classnames[:3] == base.base_classnames
    assert new.classnames == full.classnames[3:] == new.new_classnames
    for part in ("train_x", "val", "test"):
        assert labels(getattr(base, part)) == [0, 1, 2]
        assert labels(getattr(new, part)) == [0, 1]
    assert all(i.classname == full.lab2cname[i.label + 3] for i in new.test)


def test_base2novel_trains_on_all_classes_and_splits_the_test_set(root):
    full = build(root)
    dataset = build(root, "base2novel")
    assert [i.impath for i in dataset.train_x] == [i.impath for i in full.train_x]
    assert dataset.num_classes == 5 and dataset.classnames == full.classnames
    base_test = [i for i in full.test if i.label < 3]
    new_test = [i for i in full.test if i.label >= 3]
    assert [(i.impath, i.label) for i in dataset.val] == [(i.impath, i.label) for i in base_test]
    assert [(i.impath, i.label + 3) for i in dataset.test] == [(i.impath, i.label) for i in new_test]
    assert dataset.base_classnames == full.classnames[:3] and dataset.new_classnames == full.classnames[3:]
    assert [dataset.new_classnames[i.label] for i in dataset.test] == [i.classname for i in dataset.test]


def test_base2novel_with_k_shots_keeps_all_classes(root):
    dataset = build(root, "base2novel", "DATASET.NUM_SHOTS", 1)
    assert len(dataset.train_x) == 5 and dataset.num_classes == 5


def test_base2novel_ignores_subsample_classes(root):
    dataset = build(root, "base2novel", "DATASET.SUBSAMPLE_CLASSES", "base")
    assert dataset.num_classes == 5 and len(dataset.test) == 4


def test_cross_uses_the_full_test_split_for_val_and_test(root):
    full = build(root)
    dataset = build(root, "cross")
    assert dataset.val == dataset.test
    assert [i.impath for i in dataset.test] == [i.impath for i in full.test]
    assert len(dataset.train_x) == 10
    base = build(root, "cross", "DATASET.SUBSAMPLE_CLASSES", "base")  # still applies, as in PromptKD
    assert labels(base.test) == [0, 1, 2] and base.val == base.test


def test_imagenet_val_is_test_and_variants_have_no_val(root):
    imagenet = build(root, name="ImageNet")
    assert imagenet.val is imagenet.test and len(imagenet.test) == 10
    variant = build(root, name="ImageNetA")
    assert variant.val is None and variant.train_x == variant.test
    cross = build(root, "cross", name="ImageNetA")
    assert [i.impath for i in cross.val] == [i.impath for i in variant.test]


def test_unknown_protocol_and_subsample_are_user_errors(root):
    with pytest.raises(UserError, match="Unknown data protocol 'fewshot'"):
        build(root, "fewshot")
    with pytest.raises(UserError, match="SUBSAMPLE_CLASSES"):
        build(root, None, "DATASET.SUBSAMPLE_CLASSES", "half")


def test_base_only_trains_on_the_base_classes_and_scores_as_base2novel(root):
    full = build(root)
    base2novel = build(root, "base2novel")
    dataset = build(root, "base_only")
    base_train = [i for i in full.train_x if i.label < 3]
    assert [(i.impath, i.label) for i in dataset.train_x] == [(i.impath, i.label) for i in base_train]
    assert len(dataset.train_x) == 6 and labels(dataset.train_x) == [0, 1, 2]
    for split in ("val", "test"):
        assert [(i.impath, i.label) for i in getattr(dataset, split)] == \
            [(i.impath, i.label) for i in getattr(base2novel, split)]
    # The reader still names every class (the trainers score new with the new classes' names).
    assert dataset.base_classnames == full.classnames[:3] and dataset.new_classnames == full.classnames[3:]
    assert dataset.classnames == full.classnames[:3]


def test_holdout_split_is_seeded_deterministic_disjoint_and_the_requested_fraction(root, tmp_path):
    from datasets.protocols import holdout_split

    items = build(root, "base2novel").train_x  # 10 images
    kept, held = holdout_split(items, 0.3, seed=1, root=str(root))
    assert len(held) == 3 and len(kept) == 7
    assert {i.impath for i in kept}.isdisjoint(i.impath for i in held)
    assert sorted(i.impath for i in kept + held) == sorted(i.impath for i in items)
    again_kept, again_held = holdout_split(list(reversed(items)), 0.3, seed=1, root=str(root))
    assert sorted(i.impath for i in again_held) == sorted(i.impath for i in held)  # order-independent
    other_seeds = [sorted(i.impath for i in holdout_split(items, 0.3, seed=s, root=str(root))[1]) for s in range(2, 8)]
    assert any(h != sorted(i.impath for i in held) for h in other_seeds)
    # The same images under another dataset root give the same split (paths are taken relative to it).
    moved_root = tmp_path / "elsewhere"
    moved = [SimpleNamespace(impath=str(moved_root / os.path.relpath(i.impath, str(root)))) for i in items]
    moved_held = holdout_split(moved, 0.3, seed=1, root=str(moved_root))[1]
    assert [os.path.relpath(i.impath, str(moved_root)) for i in moved_held] == \
        [os.path.relpath(i.impath, str(root)) for i in held]
    assert holdout_split(items, 0.0, seed=1) == (list(items), [])
    assert len(holdout_split(items, 0.01, seed=1)[1]) == 1  # at least one image when on


@pytest.mark.parametrize("fraction", [1.0, -0.1, 0.99, "0.2"])
def test_holdout_fraction_outside_the_range_is_a_user_error_naming_the_key(root, fraction):
    from datasets.protocols import holdout_split

    items = build(root, "base2novel").train_x
    with pytest.raises(UserError, match="TRAINER.PROMPTKD.SELECT_HOLDOUT"):
        holdout_split(items, fraction, seed=1)
