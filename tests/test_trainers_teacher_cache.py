"""TRAINER.PROMPTKD.CACHE_TEACHER_FEATURES: same losses and results as without the cache, random transforms
refused, and a second run in the same process with the same teacher and data runs no teacher image forward.
The disk cache (TEACHER_CACHE_DIR, tools/cache_teacher.py): the same run without the teacher image tower
(float32 store: identical; float16: close), another key's or a missing cache refused."""
import json
from types import SimpleNamespace

import pytest
import torch

import datasets  # noqa: F401  (registers the readers)
import trainers  # noqa: F401  (registers the trainers)
from dassl.engine import build_trainer
from dassl.utils import UserError, set_random_seed
from trainers import teacher_cache
from trainers.teacher import Teacher

import trainers_tiny_setup as tiny

DETERMINISTIC = ["INPUT.TRANSFORMS", ["normalize"], "OPTIM.MAX_EPOCH", 2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny.make_world(tmp_path_factory.mktemp("teacher_cache"))


@pytest.fixture
def count_teacher_forwards(monkeypatch):
    """Counts the images that go through the teacher's image tower."""
    calls = []
    original = Teacher.image_features

    def counting(self, image):
        calls.append(image.shape[0])
        return original(self, image)

    monkeypatch.setattr(Teacher, "image_features", counting)
    return calls


def _run(world, output_dir, cache: bool, trainer_name="PromptKD_RSM", extra=(), key="CACHE_TEACHER_FEATURES"):
    opts = DETERMINISTIC + [f"TRAINER.PROMPTKD.{key}", cache] + list(extra)
    cfg = tiny.make_cfg(world["root"], trainer_name, str(output_dir), world["weights"], world["teacher_root"],
                        opts=opts)
    set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    losses = []
    step = trainer.forward_backward
    trainer.forward_backward = lambda batch: losses.append(step(batch)) or losses[-1]
    trainer.train()
    return trainer, losses, json.loads((output_dir / "results.json").read_text())


def test_cached_run_matches_uncached_and_second_run_reuses(world, tmp_path, count_teacher_forwards, capsys):
    teacher_cache.clear()
    _, plain_losses, plain = _run(world, tmp_path / "plain", cache=False)
    n_plain = sum(count_teacher_forwards)
    count_teacher_forwards.clear()

    trainer, cached_losses, cached = _run(world, tmp_path / "cached", cache=True)
    assert "Teacher cache (TRAINER.PROMPTKD.CACHE_TEACHER_FEATURES): new" in capsys.readouterr().out
    n_train = len(trainer.dm.dataset.train_x)
    assert n_plain == 2 * len(trainer.train_loader_x) * 4  # 2 epochs of full batches of 4
    assert sum(count_teacher_forwards) <= n_train < n_plain  # each image at most once
    assert len(cached_losses) == len(plain_losses) == 2 * len(trainer.train_loader_x)
    for a, b in zip(plain_losses, cached_losses):
        assert set(a) == set(b)
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    for which in ("best", "last"):
        for metric, value in plain[which].items():
            assert cached[which][metric] == pytest.approx(value, abs=1e-3), (which, metric)

    # Same teacher and data in the same process: no teacher image forward at all, also for another trainer
    # and seed (the features do not depend on the student).
    count_teacher_forwards.clear()
    _, again_losses, _ = _run(world, tmp_path / "again", cache=True, trainer_name="PromptKD", extra=["SEED", 2])
    assert "Teacher cache (TRAINER.PROMPTKD.CACHE_TEACHER_FEATURES): reused" in capsys.readouterr().out
    assert count_teacher_forwards == [] and len(again_losses) == len(plain_losses)


def test_cache_key_changes_with_the_teacher_checkpoint_and_input(world, tmp_path):
    cfg = tiny.make_cfg(world["root"], "PromptKD", str(tmp_path), world["weights"], world["teacher_root"],
                        opts=DETERMINISTIC)
    cpu = torch.device("cpu")
    teacher = SimpleNamespace(checkpoint=world["teacher_ckpt"], weights=world["weights"][1])
    key = teacher_cache.cache_key(cfg, teacher, cpu)
    assert key == teacher_cache.cache_key(cfg, SimpleNamespace(**vars(teacher)), cpu)
    other_ckpt = tmp_path / "other.pth.tar"
    other_ckpt.write_bytes(b"x")
    assert key != teacher_cache.cache_key(cfg, SimpleNamespace(checkpoint=str(other_ckpt), weights=teacher.weights), cpu)
    resized = tiny.make_cfg(world["root"], "PromptKD", str(tmp_path), world["weights"], world["teacher_root"],
                            opts=DETERMINISTIC + ["INPUT.PIXEL_MEAN", [0.5, 0.5, 0.5]])
    assert key != teacher_cache.cache_key(resized, teacher, cpu)


def test_built_teacher_remembers_its_checkpoint_and_weights(world, tmp_path, recwarn):
    teacher_cache.clear()
    trainer, _, _ = _run(world, tmp_path / "old", cache=True, key="CACHE_TEACHER_LOGITS")
    assert trainer.teacher.checkpoint == world["teacher_ckpt"] and trainer.teacher.weights == world["weights"][1]
    # The deprecated key still switches the cache on, with a warning naming the new key.
    assert trainer.teacher_cache is not None and trainer.teacher_cache.computed > 0
    assert any("CACHE_TEACHER_FEATURES" in str(w.message) for w in recwarn.list)
    teacher_cache.clear()


def test_store_keeps_at_most_a_few_keys():
    teacher_cache.clear()
    for i in range(teacher_cache.MAX_STORES + 2):
        teacher_cache.store_for(("key", i))["x"] = torch.zeros(1)
    assert len(teacher_cache._stores) == teacher_cache.MAX_STORES
    assert ("key", 0) not in teacher_cache._stores
    teacher_cache.clear()


def test_random_transform_is_refused(world, tmp_path):
    cfg = tiny.make_cfg(world["root"], "PromptKD", str(tmp_path), world["weights"], world["teacher_root"],
                        opts=["INPUT.TRANSFORMS", ["random_resized_crop", "random_flip", "normalize"],
                              "TRAINER.PROMPTKD.CACHE_TEACHER_FEATURES", True])
    with pytest.raises(UserError) as info:
        build_trainer(cfg)
    message = str(info.value)
    assert "TRAINER.PROMPTKD.CACHE_TEACHER_FEATURES" in message
    assert "random ops ['random_resized_crop', 'random_flip']" in message


# ----------------------------------------------------------------------------- disk cache
SEEDED = ["DATALOADER.SEEDED_AUGMENTATION", True, "OPTIM.MAX_EPOCH", 2]  # random crop / flip, seeded


def _disk_run(world, output_dir, cache_dir="", extra=()):
    """A 2-epoch PromptKD_RSM run with seeded random augmentation; returns losses and final weights."""
    opts = SEEDED + ["TRAINER.PROMPTKD.TEACHER_CACHE_DIR", str(cache_dir)] + list(extra)
    cfg = tiny.make_cfg(world["root"], "PromptKD_RSM", str(output_dir), world["weights"], world["teacher_root"],
                        opts=opts)
    set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    trainer.initial_weights = {k: v.detach().clone() for k, v in trainer.student.state_dict().items()}
    losses = []
    step = trainer.forward_backward
    trainer.forward_backward = lambda batch: losses.append(step(batch)) or losses[-1]
    trainer.train()
    weights = {k: v.detach().clone() for k, v in trainer.student.state_dict().items()}
    return trainer, losses, weights


def _fill(world, tmp_path, cache_dir, dtype="fp32", extra=()):
    from tools import cache_teacher

    argv = ["--root", world["root"], "--seed", "1", "--trainer", "PromptKD",
            "--config-file", "configs/trainers/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx.yaml",
            "--output-dir", str(tmp_path / "fill_out"), "--epochs", "2",
            "DATASET.NAME", tiny.DATASET, "DATASET.NUM_SHOTS", "0", "TRAINER.MODAL", "base2novel",
            "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "USE_CUDA", "False", "MODEL.BACKBONE.WEIGHTS", world["weights"][0],
            "TRAINER.PROMPTKD.TEACHER_WEIGHTS", world["weights"][1],
            "TRAINER.PROMPTKD.TEACHER_ROOT", world["teacher_root"], "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", "2",
            "DATALOADER.SEEDED_AUGMENTATION", "True", "TRAINER.PROMPTKD.TEACHER_CACHE_DIR", str(cache_dir),
            "TRAINER.PROMPTKD.TEACHER_CACHE_DTYPE", dtype] + list(extra)
    return cache_teacher.main(argv)


def test_disk_cache_gives_the_same_run_without_the_teacher_image_tower(world, tmp_path, count_teacher_forwards):
    cache = tmp_path / "cache32"
    assert _fill(world, tmp_path, cache, "fp32") == 0
    assert sorted(p.name for p in cache.iterdir()) == ["epoch_0.pt", "epoch_1.pt", "teacher_cache.json"]
    _, plain_losses, plain_weights = _disk_run(world, tmp_path / "plain")
    count_teacher_forwards.clear()
    trainer, cached_losses, cached_weights = _disk_run(world, tmp_path / "cached", cache)
    assert count_teacher_forwards == []  # the cache is complete: the teacher's image tower never ran
    assert trainer.teacher_disk.read == 2 * len(trainer.train_loader_x) * 4
    assert cached_losses == plain_losses  # float32 store: identical
    for key, value in plain_weights.items():
        assert torch.equal(value, cached_weights[key]), key


def test_disk_cache_float16_is_close(world, tmp_path):
    cache = tmp_path / "cache16"
    assert _fill(world, tmp_path, cache, "fp16") == 0
    plain, plain_losses, plain_weights = _disk_run(world, tmp_path / "plain")
    _, half_losses, half_weights = _disk_run(world, tmp_path / "half", cache)
    # features are unit vectors: float16 rounding is ~5e-4 relative per entry, so the logits and losses
    # move by about that much
    for a, b in zip(plain_losses, half_losses):
        assert b["loss"] == pytest.approx(a["loss"], rel=5e-3, abs=1e-4)
    assert half_losses != plain_losses  # the store really was float16
    # the weights: the float16 run's distance to the float32 run, against how far training moved them
    # (over all weights together: a bias before BatchNorm barely moves, so per tensor the ratio is noise)
    update = torch.cat([(v - plain.initial_weights[k]).flatten() for k, v in plain_weights.items()]).norm()
    apart = torch.cat([(half_weights[k] - v).flatten() for k, v in plain_weights.items()]).norm()
    print(f"float16 store: weights apart by {float(apart / update):.2e} of the training update")
    assert 0 < apart <= 1e-2 * update  # measured 7.7e-4


def test_disk_cache_of_another_key_or_missing_is_refused(world, tmp_path):
    cache = tmp_path / "cache"
    assert _fill(world, tmp_path, cache, "fp32") == 0
    with pytest.raises(UserError, match="augmentation: cache 'seeded 1', this run 'seeded 2'"):
        _disk_run(world, tmp_path / "seed2", cache, extra=["SEED", 2])
    with pytest.raises(UserError, match="holds no teacher cache: run tools/cache_teacher.py"):
        _disk_run(world, tmp_path / "empty", tmp_path / "empty_cache")
    # the tool refuses to mix keys in one folder too
    assert _fill(world, tmp_path, cache, "fp32", extra=["INPUT.INTERPOLATION", "bilinear"]) == 2


def test_disk_cache_of_a_deterministic_transform_is_one_file_for_every_epoch(world, tmp_path,
                                                                              count_teacher_forwards):
    cache = tmp_path / "det"
    det = ["INPUT.TRANSFORMS", "['normalize']", "DATALOADER.SEEDED_AUGMENTATION", "False"]
    assert _fill(world, tmp_path, cache, "fp32", extra=det) == 0
    assert sorted(p.name for p in cache.iterdir()) == ["epoch_all.pt", "teacher_cache.json"]
    count_teacher_forwards.clear()
    trainer, _, _ = _disk_run(world, tmp_path / "det_run", cache,
                              extra=["INPUT.TRANSFORMS", ["normalize"], "DATALOADER.SEEDED_AUGMENTATION", False])
    assert count_teacher_forwards == [] and trainer.teacher_disk.read == 2 * len(trainer.train_loader_x) * 4


def test_disk_cache_with_random_unseeded_transforms_is_refused(world, tmp_path):
    with pytest.raises(UserError, match="needs DATALOADER.SEEDED_AUGMENTATION True"):
        _disk_run(world, tmp_path / "r", tmp_path / "c", extra=["DATALOADER.SEEDED_AUGMENTATION", False])


# ----------------------------------------------------------------------------- teacher memory
def test_teacher_is_built_lean(world, tmp_path, monkeypatch):
    """The checkpoint's tensors are freed before the class features are computed, the zero-shot tower
    entries are never loaded, and a trainer's teacher keeps no text encoder (its features stay usable)."""
    import gc
    import weakref

    import trainers.teacher as teacher_mod

    refs, alive_at_text_pass, zero_shot_seen = [], [], []
    read = teacher_mod.read_teacher_state_dict

    def reading(path):
        state = read(path)
        refs.extend(weakref.ref(v) for v in state.values() if isinstance(v, torch.Tensor))
        return state

    original_design = teacher_mod.teacher_design_from_state_dict

    def design(state_dict, path="<checkpoint>"):
        zero_shot_seen.extend(k for k in state_dict if k.startswith(teacher_mod.ZERO_SHOT_TOWER_PREFIX))
        return original_design(state_dict, path)

    refresh = Teacher.refresh_text_features

    def refreshing(self):
        gc.collect()
        alive_at_text_pass.append(sum(ref() is not None for ref in refs))
        return refresh(self)

    monkeypatch.setattr(teacher_mod, "read_teacher_state_dict", reading)
    monkeypatch.setattr(teacher_mod, "teacher_design_from_state_dict", design)
    monkeypatch.setattr(Teacher, "refresh_text_features", refreshing)
    trainer, losses, _ = _run(world, tmp_path / "lean", cache=False, extra=["OPTIM.MAX_EPOCH", 1])
    assert refs and alive_at_text_pass == [0]
    assert zero_shot_seen == []
    assert trainer.teacher.model.text_encoder is None and trainer.teacher.text_features.shape[0] == tiny.NUM_CLASSES
    assert losses
    with pytest.raises(RuntimeError, match="text tower was released"):
        refresh(trainer.teacher)
