"""TRAINER.PROMPTKD.CACHE_TEACHER_FEATURES: same losses and results as without the cache, random transforms
refused, and a second run in the same process with the same teacher and data runs no teacher image forward."""
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
