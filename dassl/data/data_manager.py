"""`DataManager`, `build_data_loader` and `DatasetWrapper`: Dassl's data loading, same names and batch keys.

Ours: seeded training data (``DATALOADER.SEEDED_AUGMENTATION``, `dassl.data.seeding`) and, with several
processes (torchrun), ``DATALOADER.TRAIN_X.BATCH_SIZE`` as the global batch split over the processes and
evaluation split into disjoint shards (`dassl.data.samplers`).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Union

from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import Compose, Normalize, Resize, ToTensor

from dassl.utils.distributed import process_rank, world_size
from dassl.utils.tools import UserError, read_image

from . import image_cache
from .loader_options import describe as describe_loader_options
from .loader_options import loader_options
from .datasets import build_dataset
from .samplers import SampleKey, SeededSampler, ShardSampler, build_sampler
from .seeding import resolve_augmentation_seed, sample_seed, seeded_augmentation_enabled, seeded_rng
from .transforms import INTERPOLATION_MODES, build_transform


def check_global_batch(batch_size: int, num_samples: int, processes: int,
                       key: str = "DATALOADER.TRAIN_X.BATCH_SIZE") -> int:
    """The per-process batch of a global `batch_size` split over `processes`; a `UserError` naming `key`
    when it does not split evenly or the data are smaller than one global batch."""
    if processes <= 1:
        return batch_size
    if batch_size % processes:
        lower = batch_size - batch_size % processes
        suggestion = f"{lower} or {lower + processes}" if lower else f"{processes}"
        raise UserError(f"{key} {batch_size} is the global batch and must divide by the {processes} processes "
                        f"(torchrun --nproc_per_node {processes}): use a multiple of {processes}, e.g. {suggestion}")
    if num_samples < batch_size:
        raise UserError(f"the training split has {num_samples} images, fewer than one global batch ({key} "
                        f"{batch_size}); with {processes} processes set {key} to at most {num_samples} "
                        f"(a multiple of {processes})")
    return batch_size // processes


def build_data_loader(cfg, sampler_type: str = "SequentialSampler", data_source: Optional[list] = None,
                      batch_size: int = 64, n_domain: int = 0, n_ins: int = 2, tfm=None,
                      is_train: bool = True, dataset_wrapper=None, augmentation_seed: Optional[int] = None,
                      rank: Optional[int] = None, num_replicas: Optional[int] = None,
                      batch_key: str = "DATALOADER.TRAIN_X.BATCH_SIZE") -> DataLoader:
    """A DataLoader over `data_source` (list of Datum) with Dassl's sampler and drop_last rule.

    Training drops the trailing partial batch unless the whole list is smaller than one batch.
    Training with an `augmentation_seed` (``DATALOADER.SEEDED_AUGMENTATION``) uses `SeededSampler`:
    order and augmentation follow from (seed, epoch, sample index), and `batch_size` is the global
    batch, each of the `num_replicas` processes (default: the run's) loading its `rank`'s share
    (`batch_key` names the key in errors). Evaluation with several processes loads the process's
    `ShardSampler` shard (disjoint, no padding; a shard may be empty).
    """
    if not data_source:
        raise ValueError("build_data_loader got an empty data source")
    rank = process_rank() if rank is None else rank
    num_replicas = world_size() if num_replicas is None else num_replicas
    sampler = build_sampler(sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size,
                            n_domain=n_domain, n_ins=n_ins)
    wrapper_cls = dataset_wrapper or DatasetWrapper
    dataset = wrapper_cls(cfg, data_source, transform=tfm, is_train=is_train)
    common = loader_options(cfg, seeded=seeded_augmentation_enabled(cfg, num_replicas))
    if is_train and (augmentation_seed is not None or num_replicas > 1):
        if augmentation_seed is None:
            raise UserError(f"training with {num_replicas} processes needs seeded data: leave "
                            "DATALOADER.SEEDED_AUGMENTATION unset or True")
        if not isinstance(dataset, DatasetWrapper):
            raise UserError("seeded training data need a DatasetWrapper subclass as dataset_wrapper, "
                            f"got {wrapper_cls}")
        check_global_batch(batch_size, len(data_source), num_replicas, batch_key)
        dataset.augmentation_seed = augmentation_seed
        sampler = SeededSampler(len(data_source), batch_size, augmentation_seed,
                                shuffle=sampler_type != "SequentialSampler", rank=rank, num_replicas=num_replicas)
        return DataLoader(dataset, batch_size=sampler.local_batch, sampler=sampler, drop_last=False, **common)
    if not is_train and num_replicas > 1:
        shard = ShardSampler(len(data_source), rank=rank, num_replicas=num_replicas)
        return DataLoader(dataset, batch_size=batch_size, sampler=shard, drop_last=False, **common)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=is_train and len(data_source) >= batch_size,
        **common,
    )
    assert len(loader) > 0, "data loader has no batches"
    return loader


class DataManager:
    """Builds the dataset (reader by ``DATASET.NAME``), the transforms and the four loaders.

    `protocol` (None or a distillation protocol: ``"base2novel"`` / ``"base_only"`` / ``"cross"``) is passed on
    to `build_dataset`.
    """

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None,
                 protocol: Optional[str] = None):
        dataset = build_dataset(cfg, protocol=protocol)
        for split in ("train_x", "test"):
            if not getattr(dataset, split):
                raise UserError(f"Dataset {cfg.DATASET.NAME} (DATASET.ROOT={cfg.DATASET.ROOT!r}) "
                                f"has an empty {split} split")

        if custom_tfm_train is None:
            tfm_train = build_transform(cfg, is_train=True)
        else:
            print("* Using custom transform for training")
            tfm_train = custom_tfm_train
        if custom_tfm_test is None:
            tfm_test = build_transform(cfg, is_train=False)
        else:
            print("* Using custom transform for testing")
            tfm_test = custom_tfm_test

        loaders = cfg.DATALOADER
        # The base seed of seeded training data (None: the global random streams, as in Dassl).
        seeded = seeded_augmentation_enabled(cfg)
        self.augmentation_seed: Optional[int] = resolve_augmentation_seed(cfg) if seeded else None
        self.train_loader_x = build_data_loader(
            cfg, sampler_type=loaders.TRAIN_X.SAMPLER, data_source=dataset.train_x,
            batch_size=loaders.TRAIN_X.BATCH_SIZE, n_domain=loaders.TRAIN_X.N_DOMAIN,
            n_ins=loaders.TRAIN_X.N_INS, tfm=tfm_train, is_train=True, dataset_wrapper=dataset_wrapper,
            augmentation_seed=self.augmentation_seed)

        self.train_loader_u = None
        if dataset.train_u:
            same = loaders.TRAIN_U.SAME_AS_X
            u_cfg = loaders.TRAIN_X if same else loaders.TRAIN_U
            self.train_loader_u = build_data_loader(
                cfg, sampler_type=u_cfg.SAMPLER, data_source=dataset.train_u,
                batch_size=u_cfg.BATCH_SIZE, n_domain=u_cfg.N_DOMAIN, n_ins=u_cfg.N_INS,
                tfm=tfm_train, is_train=True, dataset_wrapper=dataset_wrapper,
                augmentation_seed=self.augmentation_seed,
                batch_key=f"DATALOADER.{'TRAIN_X' if same else 'TRAIN_U'}.BATCH_SIZE")

        self.val_loader = None
        if dataset.val:
            self.val_loader = build_data_loader(
                cfg, sampler_type=loaders.TEST.SAMPLER, data_source=dataset.val,
                batch_size=loaders.TEST.BATCH_SIZE, tfm=tfm_test, is_train=False,
                dataset_wrapper=dataset_wrapper)

        self.test_loader = build_data_loader(
            cfg, sampler_type=loaders.TEST.SAMPLER, data_source=dataset.test,
            batch_size=loaders.TEST.BATCH_SIZE, tfm=tfm_test, is_train=False,
            dataset_wrapper=dataset_wrapper)

        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset
        self.tfm_train = tfm_train
        self.tfm_test = tfm_test

        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)
        print(describe_loader_options(loader_options(cfg, seeded)))
        if cfg.DATALOADER.CACHE_IMAGES:
            print(image_cache.summary(cfg.DATALOADER.NUM_WORKERS))

    def set_augmentation_seed(self, seed: int) -> None:
        """Use `seed` as the base seed of the seeded training data (a resumed unseeded run restores it).

        Call before the training loaders are first iterated (worker processes copy the dataset then).
        """
        self.augmentation_seed = int(seed)
        for loader in (self.train_loader_x, self.train_loader_u):
            if loader is not None and isinstance(loader.sampler, SeededSampler):
                loader.sampler.seed = self.augmentation_seed
                loader.dataset.augmentation_seed = self.augmentation_seed

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def num_source_domains(self) -> int:
        return self._num_source_domains

    @property
    def lab2cname(self):
        return self._lab2cname

    def show_dataset_summary(self, cfg) -> None:
        """Print the two-column dataset table (tabulate "simple" style, no headers)."""
        rows = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            rows.append(["Source", str(list(cfg.DATASET.SOURCE_DOMAINS))])
        if cfg.DATASET.TARGET_DOMAINS:
            rows.append(["Target", str(list(cfg.DATASET.TARGET_DOMAINS))])
        rows.append(["# classes", f"{self.num_classes:,}"])
        rows.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.train_u:
            rows.append(["# train_u", f"{len(self.dataset.train_u):,}"])
        if self.dataset.val:
            rows.append(["# val", f"{len(self.dataset.val):,}"])
        rows.append(["# test", f"{len(self.dataset.test):,}"])
        print(format_table(rows))


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, framed by dashed rules (no header)."""
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    rule = "  ".join("-" * width for width in widths)
    body = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([rule, *body, rule])


class DatasetWrapper(Dataset):
    """Turns a list of `Datum` into batch dicts with keys img, label, domain, impath, index.

    A list/tuple of transforms gives keys ``img``, ``img2``, ``img3`` ...; with
    ``DATALOADER.K_TRANSFORMS > 1`` (training only) each key holds a list of augmented views;
    ``DATALOADER.RETURN_IMG0`` adds ``img0`` (resized, tensor, normalised if chosen).
    ``DATALOADER.CACHE_IMAGES`` takes ``img`` from the process-level store of `image_cache` (single
    deterministic transform only; anything else is refused with a ``UserError``).

    Items are requested by index (``dataset[i]``) or, from a `SeededSampler`, by `SampleKey`
    (index, epoch): then every random draw of the item's transforms comes from generators seeded with
    ``sample_seed(augmentation_seed, epoch, index)`` (`dassl.data.seeding`), so the item does not depend
    on the process or worker that loads it.
    """

    def __init__(self, cfg, data_source: list, transform=None, is_train: bool = False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        if self.k_tfm > 1 and transform is None:
            raise ValueError(f"Cannot augment the image {self.k_tfm} times because transform is None")

        interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
        to_tensor: List[Callable] = [Resize(tuple(cfg.INPUT.SIZE), interpolation=interp), ToTensor()]
        if "normalize" in cfg.INPUT.TRANSFORMS:
            to_tensor.append(Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
        self.to_tensor = Compose(to_tensor)
        self.cache_description = self._cache_description()
        self.augmentation_seed: Optional[int] = None  # set by build_data_loader for seeded training data

    def _cache_description(self) -> Optional[str]:
        """The transform's key in the image cache, or None when ``DATALOADER.CACHE_IMAGES`` is off."""
        if not self.cfg.DATALOADER.CACHE_IMAGES:
            return None
        if self.transform is None:
            print(f"Image cache ({image_cache.CONFIG_KEY}): not used for a loader without transform "
                  "(INPUT.NO_TRANSFORM)")
            return None
        image_cache.check_cacheable(self.cfg, self.transform, self.is_train)
        return image_cache.describe(self.cfg, self.transform)

    def _load_transformed(self, impath: str):
        """Read and transform one image (what the cache stores)."""
        return self.transform(read_image(impath))

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, key: Union[int, SampleKey]) -> dict:
        if isinstance(key, SampleKey):
            if self.augmentation_seed is None:
                raise RuntimeError("a SampleKey was requested from a DatasetWrapper without augmentation_seed")
            with seeded_rng(sample_seed(self.augmentation_seed, key.epoch, key.index)):
                return self._item(key.index)
        return self._item(key)

    def _item(self, idx: int) -> dict:
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        if self.cache_description is not None:
            output["img"] = image_cache.cached_image(item.impath, self.cache_description, self._load_transformed)
            return output
        img0 = read_image(item.impath)

        if self.transform is None:
            output["img"] = img0
        elif isinstance(self.transform, (list, tuple)):
            for i, tfm in enumerate(self.transform):
                key = "img" if i == 0 else f"img{i + 1}"
                output[key] = self._transform_image(tfm, img0)
        else:
            output["img"] = self._transform_image(self.transform, img0)

        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm, img0):
        views = [tfm(img0) for _ in range(self.k_tfm)]
        return views[0] if len(views) == 1 else views
