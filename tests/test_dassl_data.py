"""Datum / DatasetBase helpers, split JSON, dataset registry, transforms, loaders and batch format."""
from __future__ import annotations

import json
import random

import pytest
import torch
from PIL import Image

import toy_engine  # noqa: F401  (registers ToyFolder)
from dassl.config import get_cfg_default
from dassl.data import DataManager, DatasetWrapper, build_data_loader
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset
from dassl.data.datasets.base_dataset import MissingImageError
from dassl.data.samplers import build_sampler
from dassl.data.transforms import build_transform
from toy_engine import make_image_folder, toy_cfg

torch.set_num_threads(1)


@pytest.fixture
def files(tmp_path):
    """Empty files standing in for images: Datum only checks that the file exists."""
    def make(n):
        paths = []
        for i in range(n):
            path = tmp_path / "imgs" / f"{i:03d}.jpg"
            path.parent.mkdir(exist_ok=True)
            path.touch()
            paths.append(str(path))
        return paths
    return make


def labelled(paths, labels):
    return [Datum(impath=p, label=y, classname=f"c{y}") for p, y in zip(paths, labels)]


# ----------------------------------------------------------------------------- Datum / DatasetBase
def test_datum_requires_an_existing_file(tmp_path):
    with pytest.raises(MissingImageError, match="missing.jpg"):
        Datum(impath=str(tmp_path / "missing.jpg"))
    with pytest.raises(AssertionError):  # what original Dassl callers expect
        Datum(impath=str(tmp_path / "missing.jpg"))


def test_datasetbase_label_bookkeeping_comes_from_train_x(files):
    train = labelled(files(4), [3, 0, 3, 1])
    base = DatasetBase(train_x=train, val=[], test=train[:1])
    assert base.num_classes == 4  # max + 1, not the number of distinct labels
    assert base.lab2cname == {0: "c0", 1: "c1", 3: "c3"}
    assert base.classnames == ["c0", "c1", "c3"]
    assert base.base_classnames == ["c0", "c1"] and base.new_classnames == ["c3"]


# ----------------------------------------------------------------------------- few-shot
def _expected_fewshot(items, k, seed):
    """Dassl's algorithm written out: per label in first-appearance order, random.sample."""
    random.seed(seed)
    order, groups = [], {}
    for item in items:
        if item.label not in groups:
            order.append(item.label)
            groups[item.label] = []
        groups[item.label].append(item)
    picked = []
    for label in order:
        group = groups[label]
        picked.extend(random.sample(group, k) if len(group) >= k else group)
    return [item.impath for item in picked]


def test_fewshot_follows_dassl_algorithm_and_seed(files):
    labels = [2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 2]
    items = labelled(files(len(labels)), labels)
    base = DatasetBase(train_x=items)

    random.seed(5)
    first = [d.impath for d in base.generate_fewshot_dataset(items, num_shots=3)]
    random.seed(5)
    again = [d.impath for d in base.generate_fewshot_dataset(items, num_shots=3)]
    assert first == again == _expected_fewshot(items, 3, 5)
    random.seed(6)
    other = [d.impath for d in base.generate_fewshot_dataset(items, num_shots=3)]
    assert other != first  # a different seed draws a different subset
    assert [item.label for item in base.generate_fewshot_dataset(items, num_shots=3)] == [2] * 3 + [0] * 3 + [1] * 3


def test_fewshot_small_classes_repeat_and_passthrough(files):
    items = labelled(files(5), [0, 0, 0, 0, 1])
    base = DatasetBase(train_x=items)
    kept = base.generate_fewshot_dataset(items, num_shots=2)
    assert [d.label for d in kept] == [0, 0, 1]  # class 1 keeps its single item
    repeated = base.generate_fewshot_dataset(items, num_shots=2, repeat=True)
    assert [d.label for d in repeated] == [0, 0, 1, 1]
    assert base.generate_fewshot_dataset(items, num_shots=0) is items
    train, val = base.generate_fewshot_dataset(items, items[:2], num_shots=1)
    assert len(train) == 2 and len(val) == 1


# ----------------------------------------------------------------------------- base / new
def test_subsample_classes_counts_and_relabelling(files, capsys):
    paths = files(10)
    train = labelled(paths[:5], [0, 1, 2, 3, 4])
    test = labelled(paths[5:], [4, 3, 2, 1, 0])
    base_train, base_test = DatasetBase.subsample_classes(train, test, subsample="base")
    assert [d.label for d in base_train] == [0, 1, 2]  # ceil(5/2) = 3 base classes
    assert [d.classname for d in base_test] == ["c2", "c1", "c0"]
    new_train, new_test = DatasetBase.subsample_classes(train, test, subsample="new")
    assert [(d.label, d.classname) for d in new_train] == [(0, "c3"), (1, "c4")]
    assert [(d.label, d.classname) for d in new_test] == [(1, "c4"), (0, "c3")]
    assert "SUBSAMPLE NEW CLASSES!" in capsys.readouterr().out
    assert DatasetBase.subsample_classes(train, test, subsample="all") == (train, test)
    with pytest.raises(ValueError, match="novel"):
        DatasetBase.subsample_classes(train, subsample="novel")


# ----------------------------------------------------------------------------- split JSON
def test_split_json_round_trip(files, tmp_path):
    paths = files(6)
    prefix = str(tmp_path / "imgs")
    train, val, test = labelled(paths[:3], [0, 1, 0]), labelled(paths[3:4], [1]), labelled(paths[4:], [0, 1])
    split_file = tmp_path / "split_toy.json"
    DatasetBase.save_split(train, val, test, str(split_file), prefix)

    raw = json.loads(split_file.read_text())
    assert raw["train"][0] == ["000.jpg", 0, "c0"]  # relative path, label, classname
    assert set(raw) == {"train", "val", "test"}

    read = DatasetBase.read_split(str(split_file), prefix)
    for original, loaded in zip((train, val, test), read):
        assert [(d.impath, d.label, d.classname) for d in loaded] == \
            [(d.impath, d.label, d.classname) for d in original]


# ----------------------------------------------------------------------------- registry
def test_build_dataset_unknown_name_lists_registered(tmp_path):
    cfg = get_cfg_default()
    cfg.DATASET.NAME = "ToyFoldr"
    with pytest.raises(ValueError, match=r"ToyFolder.*do you mean \[ToyFolder\]"):
        build_dataset(cfg)


def test_build_dataset_passes_protocol_only_when_given(tmp_path):
    @DATASET_REGISTRY.register(force=True)
    class CoOpStyleReader(DatasetBase):  # an old reader without a protocol argument
        def __init__(self, cfg):
            super().__init__(train_x=[])

    @DATASET_REGISTRY.register(force=True)
    class ProtocolReader(DatasetBase):
        def __init__(self, cfg, protocol=None):
            self.protocol = protocol
            super().__init__(train_x=[])

    cfg = get_cfg_default()
    cfg.DATASET.NAME = "CoOpStyleReader"
    assert isinstance(build_dataset(cfg), CoOpStyleReader)
    cfg.DATASET.NAME = "ProtocolReader"
    assert build_dataset(cfg).protocol is None
    assert build_dataset(cfg, protocol="base2novel").protocol == "base2novel"


# ----------------------------------------------------------------------------- transforms / loaders
def test_transforms_output_size_and_lines(tmp_path, capsys):
    cfg = toy_cfg(tmp_path, tmp_path, **{"INPUT.SIZE": (16, 16)})
    image = Image.new("RGB", (40, 24), (10, 200, 30))
    train_tfm = build_transform(cfg, is_train=True)
    test_tfm = build_transform(cfg, is_train=False)
    assert train_tfm(image).shape == (3, 16, 16)
    assert test_tfm(image).shape == (3, 16, 16)
    out = capsys.readouterr().out
    assert "+ random resized crop (size=(16, 16), scale=(0.08, 1.0))" in out
    assert "+ resize the smaller edge to 16" in out and "+ 16x16 center crop" in out

    cfg.INPUT.TRANSFORMS = ("randaugment",)
    with pytest.raises(NotImplementedError, match="randaugment"):
        build_transform(cfg)
    cfg.INPUT.TRANSFORMS = ("sharpen",)
    with pytest.raises(ValueError, match="sharpen"):
        build_transform(cfg)
    cfg.INPUT.NO_TRANSFORM = True
    assert build_transform(cfg) is None


def test_dataset_wrapper_batch_keys(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class_train=2, per_class_test=1)
    cfg = toy_cfg(root, tmp_path / "out", **{"DATALOADER.RETURN_IMG0": True})
    items = toy_engine.read_folder(str(root / "train"))
    loader = build_data_loader(cfg, "SequentialSampler", items, batch_size=4,
                               tfm=build_transform(cfg, is_train=False), is_train=False)
    batch = next(iter(loader))
    assert set(batch) == {"img", "img0", "label", "domain", "impath", "index"}
    assert batch["img"].shape == (4, 3, 8, 8) and batch["img0"].shape == (4, 3, 8, 8)
    assert batch["label"].dtype == torch.int64 and batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["impath"][0] == items[0].impath
    assert len(loader) == 2  # 6 items, no drop_last at test time

    cfg.DATALOADER.K_TRANSFORMS = 2
    wrapper = DatasetWrapper(cfg, items, transform=[build_transform(cfg), build_transform(cfg)], is_train=True)
    sample = wrapper[0]
    assert isinstance(sample["img"], list) and len(sample["img"]) == 2 and len(sample["img2"]) == 2


def test_train_loader_drops_last_partial_batch(tmp_path):
    root = make_image_folder(tmp_path / "data", per_class_train=3, per_class_test=1)
    cfg = toy_cfg(root, tmp_path / "out")
    items = toy_engine.read_folder(str(root / "train"))  # 9 items
    assert len(build_data_loader(cfg, "RandomSampler", items, batch_size=4, tfm=build_transform(cfg))) == 2
    assert len(build_data_loader(cfg, "RandomSampler", items, batch_size=16, tfm=build_transform(cfg))) == 1


def test_unknown_sampler_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown sampler type"):
        build_sampler("ShuffleEverything", data_source=[1, 2])
    with pytest.raises(NotImplementedError, match="RandomDomainSampler"):
        build_sampler("RandomDomainSampler", data_source=[1, 2])


def test_data_manager_builds_loaders_and_prints_table(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data")
    cfg = toy_cfg(root, tmp_path / "out")
    dm = DataManager(cfg, protocol="cross")
    assert toy_engine.ToyFolder.last_protocol == "cross"
    assert dm.num_classes == 3 and dm.lab2cname[2] == "blue"
    assert len(dm.train_loader_x) == 3 and dm.val_loader is not None and dm.train_loader_u is None
    table = capsys.readouterr().out
    assert "Dataset    ToyFolder" in table and "# train_x  12" in table and "# test     6" in table


def test_datum_pickle_cache_loads_safely(files, tmp_path):
    import os
    import pickle

    from dassl.data.datasets import load_datum_pickle

    items = labelled(files(3), [0, 1, 1])
    cache = tmp_path / "shot_2-seed_1.pkl"
    with open(cache, "wb") as f:
        pickle.dump({"train": items, "val": items[:1]}, f, protocol=pickle.HIGHEST_PROTOCOL)
    loaded = load_datum_pickle(str(cache))
    assert [(d.impath, d.label, d.classname) for d in loaded["train"]] == \
        [(d.impath, d.label, d.classname) for d in items]

    class Exploit:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"train": [Exploit()]}))
    with pytest.raises(Exception, match="evil.pkl"):
        load_datum_pickle(str(evil))
    assert not (tmp_path / "pwned").exists()


def test_keep_train_x_narrows_the_training_list_and_refuses_foreign_items(tmp_path):
    items = []
    for i in range(4):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(b"x")
        items.append(Datum(impath=str(path), label=i % 2, classname=f"c{i % 2}"))
    dataset = DatasetBase(train_x=items, test=items)
    dataset.keep_train_x(items[:3])
    assert dataset.train_x == items[:3] and dataset.num_classes == 2
    with pytest.raises(ValueError, match="subset"):
        dataset.keep_train_x([Datum(impath=str(tmp_path / "0.jpg"), label=0, classname="c0")])
