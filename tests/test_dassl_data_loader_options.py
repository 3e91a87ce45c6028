"""DataLoader options (DATALOADER.PIN_MEMORY / PERSISTENT_WORKERS / PREFETCH_FACTOR): automatic defaults,
explicit choices, errors, and that persistent workers load the same seeded batches as fresh ones."""
import pytest
import torch

from dassl.data import build_data_loader
from dassl.data.loader_options import loader_options
from dassl.data.transforms import build_transform
from dassl.utils import UserError

from toy_engine import make_image_folder, read_folder, toy_cfg


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("toy"), per_class_train=4, per_class_test=2)


def _cfg(data_root, tmp_path, workers=0, **keys):
    cfg = toy_cfg(data_root, tmp_path / "out")
    cfg.DATALOADER.NUM_WORKERS = workers
    for key, value in keys.items():
        setattr(cfg.DATALOADER, key, value)
    return cfg


def test_automatic_options_without_workers_pass_nothing_pytorch_would_refuse(data_root, tmp_path):
    options = loader_options(_cfg(data_root, tmp_path), seeded=True)
    assert options == {"num_workers": 0, "pin_memory": torch.cuda.is_available()}


def test_persistent_workers_are_automatic_only_for_seeded_data(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path, workers=2)
    assert loader_options(cfg, seeded=True)["persistent_workers"] is True
    assert loader_options(cfg, seeded=False)["persistent_workers"] is False  # keeps the global random stream
    cfg.DATALOADER.PERSISTENT_WORKERS = True
    assert loader_options(cfg, seeded=False)["persistent_workers"] is True
    cfg.DATALOADER.PERSISTENT_WORKERS = False
    assert loader_options(cfg, seeded=True)["persistent_workers"] is False


def test_explicit_pin_memory_and_prefetch(data_root, tmp_path):
    cfg = _cfg(data_root, tmp_path, workers=2, PIN_MEMORY=True, PREFETCH_FACTOR=6)
    options = loader_options(cfg, seeded=False)
    assert options["pin_memory"] is True and options["prefetch_factor"] == 6
    assert "prefetch_factor" not in loader_options(_cfg(data_root, tmp_path, workers=2), seeded=False)


@pytest.mark.parametrize("key, value, named", [("PERSISTENT_WORKERS", "yes", "DATALOADER.PERSISTENT_WORKERS"),
                                               ("PIN_MEMORY", 1, "DATALOADER.PIN_MEMORY"),
                                               ("PREFETCH_FACTOR", -1, "DATALOADER.PREFETCH_FACTOR")])
def test_bad_values_name_their_key(data_root, tmp_path, key, value, named):
    with pytest.raises(UserError, match=named):
        loader_options(_cfg(data_root, tmp_path, workers=1, **{key: value}), seeded=False)


def test_persistent_workers_load_the_same_seeded_epochs_as_fresh_workers(data_root, tmp_path):
    data = read_folder(str(data_root / "train"))

    def epochs(persistent: bool):
        cfg = _cfg(data_root, tmp_path, workers=2, PERSISTENT_WORKERS=persistent)
        cfg.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]
        loader = build_data_loader(cfg, sampler_type="RandomSampler", data_source=data, batch_size=4,
                                   tfm=build_transform(cfg, is_train=True), is_train=True, augmentation_seed=3)
        assert loader.persistent_workers is persistent
        out = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            out.append([(batch["index"], batch["img"]) for batch in loader])
        return out

    fresh, kept = epochs(False), epochs(True)
    for epoch_fresh, epoch_kept in zip(fresh, kept):
        assert len(epoch_fresh) == len(epoch_kept) > 0
        for (index_a, img_a), (index_b, img_b) in zip(epoch_fresh, epoch_kept):
            assert torch.equal(index_a, index_b) and torch.equal(img_a, img_b)
    assert not torch.equal(fresh[0][0][0], fresh[1][0][0]) or not torch.equal(fresh[0][0][1], fresh[1][0][1])
