"""Seeded training data (DATALOADER.SEEDED_AUGMENTATION): order and augmentation as pure functions of
(seed, epoch, sample index), hence the same batches for any number of loader workers and processes."""
import random

import numpy as np
import pytest
import torch
from torch.utils.data import RandomSampler

from dassl.data import DataManager, build_data_loader
from dassl.data.samplers import SampleKey, SeededSampler, ShardSampler
from dassl.data.seeding import derive_seed, sample_seed, seeded_augmentation_enabled, seeded_rng
from dassl.data.transforms import build_transform
from dassl.utils import UserError

from toy_engine import make_image_folder, read_folder, toy_cfg

SEED = 7


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("toy"), per_class_train=4, per_class_test=3)


def _cfg(data_root, tmp_path, **overrides):
    cfg = toy_cfg(data_root, tmp_path / "out", **overrides)
    cfg.INPUT.RRCROP_SCALE = (0.3, 1.0)
    return cfg


def _epoch_batches(cfg, data, epoch, rank=0, num_replicas=1, workers=0, batch_size=4):
    cfg.DATALOADER.NUM_WORKERS = workers
    loader = build_data_loader(cfg, sampler_type="RandomSampler", data_source=data, batch_size=batch_size,
                               tfm=build_transform(cfg, is_train=True), is_train=True, augmentation_seed=SEED,
                               rank=rank, num_replicas=num_replicas)
    loader.sampler.set_epoch(epoch)
    return [(batch["index"], batch["img"]) for batch in loader]


def _global_batches(cfg, data, epoch, num_replicas, workers=0):
    """Each step's batch as one process would see it: the processes' batches concatenated in rank order."""
    per_rank = [_epoch_batches(cfg, data, epoch, rank, num_replicas, workers) for rank in range(num_replicas)]
    steps = len(per_rank[0])
    assert all(len(batches) == steps for batches in per_rank)
    return [(torch.cat([per_rank[r][k][0] for r in range(num_replicas)]),
             torch.cat([per_rank[r][k][1] for r in range(num_replicas)])) for k in range(steps)]


def _assert_same_batches(first, second):
    assert len(first) == len(second)
    for (index_a, img_a), (index_b, img_b) in zip(first, second):
        assert torch.equal(index_a, index_b)
        assert torch.equal(img_a, img_b)


def test_batches_of_an_epoch_are_the_same_for_any_worker_count_and_world_size(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path)
    data = read_folder(str(data_root / "train"))  # 12 images: 3 global batches of 4
    reference = _epoch_batches(cfg, data, epoch=1)
    assert len(reference) == 3
    _assert_same_batches(_epoch_batches(cfg, data, epoch=1, workers=2), reference)
    for num_replicas in (2, 4):
        _assert_same_batches(_global_batches(cfg, data, epoch=1, num_replicas=num_replicas), reference)
    _assert_same_batches(_global_batches(cfg, data, epoch=1, num_replicas=2, workers=2), reference)


def test_epochs_differ_and_an_epoch_repeats_exactly(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path)
    data = read_folder(str(data_root / "train"))
    first, second = _epoch_batches(cfg, data, epoch=0), _epoch_batches(cfg, data, epoch=1)
    order = [torch.cat([index for index, _ in batches]).tolist() for batches in (first, second)]
    assert sorted(order[0]) == sorted(order[1]) == list(range(12))
    assert order[0] != order[1]
    # the same image gets another crop / flip in another epoch, the same one when the epoch repeats
    image = {e: {int(i): img for index, imgs in batches for i, img in zip(index, imgs)}
             for e, batches in ((0, first), (1, second))}
    assert any(not torch.equal(image[0][i], image[1][i]) for i in range(12))
    _assert_same_batches(_epoch_batches(cfg, data, epoch=0), first)


def test_seeded_rng_is_a_pure_function_of_the_seed_and_restores_the_global_streams():
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    with seeded_rng(sample_seed(SEED, 3, 5)):
        drawn = (torch.rand(4), random.random(), np.random.rand())
    with seeded_rng(sample_seed(SEED, 3, 5)):
        again = (torch.rand(4), random.random(), np.random.rand())
    with seeded_rng(sample_seed(SEED, 3, 6)):
        other = torch.rand(4)
    assert torch.equal(drawn[0], again[0]) and drawn[1:] == again[1:]
    assert not torch.equal(drawn[0], other)
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])


def test_derived_seeds_separate_their_inputs():
    seeds = {derive_seed(SEED, 1, epoch, index) for epoch in range(5) for index in range(50)}
    assert len(seeds) == 250 and all(0 <= s < 2 ** 63 for s in seeds)
    assert derive_seed(1, 23) != derive_seed(12, 3)  # the parts are separated, not concatenated
    assert sample_seed(SEED, 0, 1) == sample_seed(SEED, 0, 1) != sample_seed(SEED + 1, 0, 1)


def test_seeded_sampler_splits_every_global_batch_and_drops_the_partial_one():
    single = SeededSampler(10, batch_size=4, seed=SEED)
    single.set_epoch(2)
    keys = list(single)
    assert len(keys) == len(single) == 8 and all(k.epoch == 2 for k in keys)  # 2 full batches, 2 left over
    halves = []
    for rank in range(2):
        part = SeededSampler(10, batch_size=4, seed=SEED, rank=rank, num_replicas=2)
        part.set_epoch(2)
        halves.append(list(part))
    assert [k for step in range(2) for r in range(2) for k in halves[r][2 * step:2 * step + 2]] == keys
    small = SeededSampler(3, batch_size=4, seed=SEED)  # smaller than a batch: one batch of all (Dassl's rule)
    assert sorted(k.index for k in small) == [0, 1, 2]
    with pytest.raises(ValueError):
        SeededSampler(3, batch_size=4, seed=SEED, num_replicas=2)
    unshuffled = SeededSampler(8, batch_size=4, seed=SEED, shuffle=False)
    assert [k.index for k in unshuffled] == list(range(8))


def test_shards_cover_every_sample_once_without_padding():
    for n, parts in ((9, 2), (10, 3), (2, 4)):
        shards = [list(ShardSampler(n, rank, parts)) for rank in range(parts)]
        assert [i for shard in shards for i in shard] == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_default_single_process_keeps_the_global_random_stream(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path)
    dm = DataManager(cfg)
    assert isinstance(dm.train_loader_x.sampler, RandomSampler) and dm.augmentation_seed is None
    batch = next(iter(dm.train_loader_x))
    assert isinstance(batch["index"], torch.Tensor)

    cfg = _cfg(data_root, tmp_path, **{"DATALOADER.SEEDED_AUGMENTATION": True})
    dm = DataManager(cfg)
    assert isinstance(dm.train_loader_x.sampler, SeededSampler) and dm.augmentation_seed == cfg.SEED
    assert isinstance(dm.test_loader.sampler, torch.utils.data.SequentialSampler)
    dm.set_augmentation_seed(99)
    assert dm.train_loader_x.sampler.seed == 99 and dm.train_loader_x.dataset.augmentation_seed == 99
    assert isinstance(next(iter(dm.train_loader_x.sampler)), SampleKey)


def test_the_key_is_automatic_and_false_is_refused_for_several_processes(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path)
    assert seeded_augmentation_enabled(cfg, 1) is False and seeded_augmentation_enabled(cfg, 2) is True
    cfg.DATALOADER.SEEDED_AUGMENTATION = False
    with pytest.raises(UserError, match="DATALOADER.SEEDED_AUGMENTATION False cannot be used with 2 processes"):
        seeded_augmentation_enabled(cfg, 2)
    cfg.DATALOADER.SEEDED_AUGMENTATION = "yes"
    with pytest.raises(UserError, match="must be True, False or None"):
        seeded_augmentation_enabled(cfg, 1)


def test_the_global_batch_must_split_evenly(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path)
    data = read_folder(str(data_root / "train"))
    with pytest.raises(UserError, match=r"DATALOADER.TRAIN_X.BATCH_SIZE 6 is the global batch and must divide "
                                        r"by the 4 processes .* e.g. 4 or 8"):
        build_data_loader(cfg, sampler_type="RandomSampler", data_source=data, batch_size=6, is_train=True,
                          augmentation_seed=SEED, rank=0, num_replicas=4)
    with pytest.raises(UserError, match="fewer than one global batch"):
        build_data_loader(cfg, sampler_type="RandomSampler", data_source=data[:3], batch_size=4, is_train=True,
                          augmentation_seed=SEED, rank=0, num_replicas=2)
