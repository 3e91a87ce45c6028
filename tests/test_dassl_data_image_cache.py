"""DATALOADER.CACHE_IMAGES: exact tensors, shared across DataManagers of a process, random transforms and
multi-view variants refused, a byte budget, and files changed on disk read again."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

import toy_engine
from dassl.data import DataManager, DatasetWrapper, image_cache
from dassl.data.transforms import build_transform
from dassl.engine import build_trainer
from dassl.utils import UserError, set_random_seed
from toy_engine import make_image_folder, model_weights, toy_cfg

torch.set_num_threads(1)

DETERMINISTIC = {"INPUT.TRANSFORMS": ("normalize",)}


@pytest.fixture(autouse=True)
def empty_cache():
    image_cache.clear()
    yield
    image_cache.clear()


@pytest.fixture
def data_root(tmp_path):
    return make_image_folder(tmp_path / "data")


@pytest.fixture
def count_opens(monkeypatch):
    """Paths opened by PIL (read_image opens every image through it)."""
    opened = []
    original = Image.open

    def counting(path, *args, **kwargs):
        opened.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting)
    return opened


def cache_cfg(data_root, tmp_path, cache=True, **overrides):
    return toy_cfg(data_root, tmp_path / "out", **{**DETERMINISTIC, "DATALOADER.CACHE_IMAGES": cache, **overrides})


def wrapper(cfg, is_train=True):
    items = toy_engine.read_folder(os.path.join(cfg.DATASET.ROOT, "train"))
    return DatasetWrapper(cfg, items, transform=build_transform(cfg, is_train=is_train), is_train=is_train)


def all_batches(loader):
    return [(batch["img"], batch["label"], batch["impath"]) for batch in loader]


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("transforms", [("normalize",), ("center_crop", "instance_norm"), ()])
@pytest.mark.parametrize("is_train", [True, False])
def test_cached_items_equal_uncached_items(data_root, tmp_path, transforms, is_train):
    plain = wrapper(cache_cfg(data_root, tmp_path, cache=False, **{"INPUT.TRANSFORMS": transforms}), is_train)
    cached = wrapper(cache_cfg(data_root, tmp_path, **{"INPUT.TRANSFORMS": transforms}), is_train)
    for _ in range(2):  # first access loads and stores, the second reads the store
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            assert set(a) == set(b)
            assert torch.equal(a["img"], b["img"]) and a["img"].dtype == b["img"].dtype
            assert (a["label"], a["impath"], a["index"]) == (b["label"], b["impath"], b["index"])
    assert len(image_cache.store()) == len(plain)


def test_trained_model_is_the_same_with_and_without_cache(data_root, tmp_path):
    weights = []
    for cache in (False, True, True):  # the second cached run takes every image from the store
        cfg = cache_cfg(data_root, tmp_path / str(len(weights)), cache=cache)
        set_random_seed(cfg.SEED)
        trainer = build_trainer(cfg)
        trainer.train()
        weights.append(model_weights(trainer))
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])


def test_returned_tensor_is_a_copy(data_root, tmp_path):
    data = wrapper(cache_cfg(data_root, tmp_path))
    first = data[0]["img"]
    expected = first.clone()
    first.zero_()
    assert torch.equal(data[0]["img"], expected)


# ----------------------------------------------------------------------------- shared in the process
def test_second_data_manager_reads_no_file(data_root, tmp_path, count_opens, capsys):
    cfg = cache_cfg(data_root, tmp_path)
    first = DataManager(cfg)
    batches = [all_batches(loader) for loader in (first.train_loader_x, first.val_loader, first.test_loader)]
    n_images = len(first.dataset.train_x) + len(first.dataset.test)  # val = test in ToyFolder
    assert len(count_opens) == n_images
    assert "Image cache (DATALOADER.CACHE_IMAGES): 0 images" in capsys.readouterr().out

    count_opens.clear()
    set_random_seed(cfg.SEED)
    second = DataManager(cache_cfg(data_root, tmp_path))
    assert f"Image cache (DATALOADER.CACHE_IMAGES): {n_images} images" in capsys.readouterr().out
    for _ in range(2):  # epochs
        all_batches(second.train_loader_x)
    again = [all_batches(loader) for loader in (second.val_loader, second.test_loader)]
    assert count_opens == []
    for (img_a, label_a, path_a), (img_b, label_b, path_b) in zip(batches[1], again[0]):
        assert torch.equal(img_a, img_b) and torch.equal(label_a, label_b) and path_a == path_b


def test_cache_off_stores_nothing(data_root, tmp_path, count_opens):
    data = wrapper(cache_cfg(data_root, tmp_path, cache=False))
    data[0], data[0]
    assert len(count_opens) == 2 and len(image_cache.store()) == 0


def test_another_transform_gets_its_own_entries(data_root, tmp_path):
    plain = wrapper(cache_cfg(data_root, tmp_path))[0]["img"]
    shifted = wrapper(cache_cfg(data_root, tmp_path, **{"INPUT.PIXEL_MEAN": [0.5, 0.5, 0.5]}))[0]["img"]
    assert not torch.equal(plain, shifted)
    assert len(image_cache.store()) == 2


# ----------------------------------------------------------------------------- refused
def test_random_train_transform_is_refused(data_root, tmp_path):
    random_train = ("random_resized_crop", "random_flip", "normalize")
    cfg = cache_cfg(data_root, tmp_path, **{"INPUT.TRANSFORMS": random_train})
    with pytest.raises(UserError) as info:
        DataManager(cfg)
    message = str(info.value)
    assert "DATALOADER.CACHE_IMAGES" in message
    assert "random ops ['RandomResizedCrop', 'RandomHorizontalFlip']" in message
    assert "training transform" in message


def test_random_custom_test_transform_is_refused(data_root, tmp_path):
    cfg = cache_cfg(data_root, tmp_path)
    random_test = build_transform(cache_cfg(data_root, tmp_path, **{"INPUT.TRANSFORMS": ("random_crop",)}))
    with pytest.raises(UserError, match=r"deterministic test transform.*\['RandomCrop'\]"):
        DataManager(cfg, custom_tfm_test=random_test)


@pytest.mark.parametrize("override, named", [
    ({"DATALOADER.K_TRANSFORMS": 2}, "DATALOADER.K_TRANSFORMS"),
    ({"DATALOADER.RETURN_IMG0": True}, "DATALOADER.RETURN_IMG0"),
])
def test_multi_view_variants_are_refused(data_root, tmp_path, override, named):
    with pytest.raises(UserError) as info:
        wrapper(cache_cfg(data_root, tmp_path, **override))
    assert "DATALOADER.CACHE_IMAGES" in str(info.value) and named in str(info.value)


def test_list_of_transforms_is_refused(data_root, tmp_path):
    cfg = cache_cfg(data_root, tmp_path)
    tfm = build_transform(cfg)
    with pytest.raises(UserError, match="list of 2 transforms"):
        DatasetWrapper(cfg, toy_engine.read_folder(str(data_root / "train")), transform=[tfm, tfm], is_train=True)


def test_no_transform_is_not_cached(data_root, tmp_path, capsys):
    cfg = cache_cfg(data_root, tmp_path, **{"INPUT.NO_TRANSFORM": True})
    data = DatasetWrapper(cfg, toy_engine.read_folder(str(data_root / "train")), transform=None, is_train=True)
    assert isinstance(data[0]["img"], Image.Image) and len(image_cache.store()) == 0
    assert "not used for a loader without transform" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bound
def test_byte_budget_drops_least_recently_used_with_one_notice(data_root, tmp_path, monkeypatch, capsys):
    data = wrapper(cache_cfg(data_root, tmp_path))
    image_bytes = 3 * 8 * 8 * 4  # float32 3x8x8
    monkeypatch.setattr(image_cache.store(), "max_bytes", 3 * image_bytes)
    for i in range(3):
        data[i]
    data[0]  # now the most recently used
    data[3]
    data[4]
    store = image_cache.store()
    assert len(store) == 3 and store.nbytes == 3 * image_bytes
    kept = {key[1] for key in store._items}
    assert kept == {os.path.abspath(data.data_source[i].impath) for i in (0, 3, 4)}
    notices = [line for line in capsys.readouterr().out.splitlines() if "budget" in line]
    assert len(notices) == 1 and "DATALOADER.CACHE_IMAGES" in notices[0]


def test_image_larger_than_budget_is_not_stored():
    store = image_cache.ImageStore(max_bytes=10)
    store.put("big", torch.zeros(100))
    store.put("small", torch.zeros(2))
    assert len(store) == 1 and store.nbytes == 8


# ----------------------------------------------------------------------------- files changed on disk
def test_changed_file_is_read_again(data_root, tmp_path, count_opens):
    data = wrapper(cache_cfg(data_root, tmp_path))
    path = data.data_source[0].impath
    before = data[0]["img"]
    stat = os.stat(path)
    Image.fromarray(np.full((10, 12, 3), 7, dtype=np.uint8)).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later mtime, even on coarse clocks
    count_opens.clear()

    after = data[0]["img"]
    assert count_opens == [path]
    assert not torch.equal(before, after)
    assert torch.equal(after, DatasetWrapper(cache_cfg(data_root, tmp_path, cache=False), data.data_source,
                                             transform=data.transform, is_train=True)[0]["img"])


def test_missing_file_still_raises_the_clear_error(data_root, tmp_path):
    data = wrapper(cache_cfg(data_root, tmp_path))
    os.remove(data.data_source[0].impath)
    with pytest.raises(UserError, match="Image file not found"):
        data[0]
