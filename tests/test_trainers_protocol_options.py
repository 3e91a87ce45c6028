"""The distillation trainers' two protocol options on a tiny fake dataset: ``TRAINER.MODAL base_only``
(train on the base classes' images, logits over the base classes only) and model selection on held-out
training images by agreement with the teacher (``TRAINER.PROMPTKD.SELECT_HOLDOUT``)."""
import json
import os

import pytest
import torch

import datasets  # noqa: F401  (registers the readers)
import trainers  # noqa: F401  (registers the trainers)
from dassl.engine import build_trainer
from dassl.utils import UserError, set_random_seed
from trainers import distill, teacher_cache
from trainers.distill import AGREEMENT_FILE_NAME, class_vectors_for_split, training_class_vectors
from trainers.promptsrc_model import CHECKPOINT_MODEL_NAME
from trainers.results import SELECTED_BY_AGREEMENT

import trainers_tiny_setup as tiny

N_BASE = 3  # of tiny.NUM_CLASSES = 5
DEFAULT_KEYS = {"trainer", "dataset", "protocol", "seed", "shots", "config_hash", "best", "last"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny.make_world(tmp_path_factory.mktemp("protocol_options"))


def _trainer(world, output_dir, trainer_name="PromptKD", opts=()):
    cfg = tiny.make_cfg(world["root"], trainer_name, str(output_dir), world["weights"], world["teacher_root"],
                        opts=list(opts))
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def _results(output_dir) -> dict:
    with open(os.path.join(str(output_dir), "results.json"), encoding="utf-8") as stream:
        return json.load(stream)


def _labels_of_paths(world) -> dict:
    """image path -> label in the full (base2novel) training list."""
    return {item.impath: item.label for item in tiny_dataset(world, "base2novel").train_x}


def tiny_dataset(world, protocol):
    from dassl.config import get_cfg_default
    from dassl.data.datasets import build_dataset
    from trainers.config import extend_cfg

    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_list(["DATASET.NAME", tiny.DATASET, "DATASET.ROOT", world["root"], "DATASET.NUM_SHOTS", 0])
    return build_dataset(cfg, protocol=protocol)


# ----------------------------------------------------------------------------------------- base_only
def test_training_class_vectors_are_the_base_rows_only_under_base_only():
    vectors = torch.arange(5).float().unsqueeze(1)
    assert training_class_vectors(vectors, "base_only").flatten().tolist() == [0, 1, 2]
    assert training_class_vectors(vectors, "base2novel") is vectors  # PromptKD: the very same tensor
    assert training_class_vectors(vectors, "cross") is vectors
    assert class_vectors_for_split(vectors, "base_only", "val").flatten().tolist() == [0, 1, 2]
    assert class_vectors_for_split(vectors, "base_only", "test").flatten().tolist() == [3, 4]


def test_base_only_trains_on_base_images_with_base_class_logits_and_writes_results(world, tmp_path, monkeypatch):
    shapes = []
    original_kd = distill.kd_loss

    def recording_kd(student_logits, teacher_logits, temperature):
        shapes.append((tuple(student_logits.shape), tuple(teacher_logits.shape)))
        return original_kd(student_logits, teacher_logits, temperature)

    monkeypatch.setattr(distill, "kd_loss", recording_kd)
    trainer = _trainer(world, tmp_path / "run", "PromptKD_RSM", ["TRAINER.MODAL", "base_only"])
    rsm_rows = []
    term_class = type(trainer.rsm_term)  # a frozen dataclass: its method is wrapped on the class
    original_rsm = term_class.loss

    def recording_rsm(term, module, backbone, projected, text_features):
        rsm_rows.append(text_features.shape[0])
        return original_rsm(term, module, backbone, projected, text_features)

    monkeypatch.setattr(term_class, "loss", recording_rsm)
    labels = _labels_of_paths(world)
    trained = trainer.train_loader_x.dataset.data_source
    assert trained and all(labels[item.impath] < N_BASE for item in trained)
    assert len(trained) == sum(label < N_BASE for label in labels.values())
    assert trainer.teacher.num_classes == tiny.NUM_CLASSES  # new classes' vectors exist for evaluation
    trainer.train()

    assert shapes and all(s[1] == N_BASE and t[1] == N_BASE for s, t in shapes)
    assert rsm_rows and set(rsm_rows) == {N_BASE}
    results = _results(tmp_path / "run")
    assert results["protocol"] == "base_only" and set(results) == DEFAULT_KEYS
    for entry in ("best", "last"):
        assert set(results[entry]) == {"epoch", "base", "new", "hm"}


def test_base_only_uses_the_base2novel_teacher_checkpoint(world, tmp_path):
    trainer = _trainer(world, tmp_path / "run", opts=["TRAINER.MODAL", "base_only"])
    assert os.path.samefile(trainer.teacher.checkpoint, world["teacher_ckpt"])


def test_teacher_caches_give_a_base_only_run_its_own_base_class_logits(world, tmp_path):
    """The memory cache holds image features (not logits): features a base2novel run stored give a
    base_only run logits over its own base classes. The disk cache's key names the training list, so a
    base_only run refuses a folder written for base2novel."""
    teacher_cache.clear()
    seeded = ["DATALOADER.SEEDED_AUGMENTATION", True]  # the disk key of random views needs seeded views
    base2novel = _trainer(world, tmp_path / "b2n", opts=seeded)
    base_only = _trainer(world, tmp_path / "base_only", opts=seeded + ["TRAINER.MODAL", "base_only"])
    batch = next(iter(base_only.train_loader_x))
    image, keys = batch["img"], list(batch["impath"])

    store = teacher_cache.store_for(teacher_cache.cache_key(base2novel.cfg, base2novel.teacher, base2novel.device))
    filled_by_b2n = teacher_cache.TeacherOutputCache(base2novel.teacher, store).logits(image, keys)
    assert filled_by_b2n.shape[1] == tiny.NUM_CLASSES and all(key in store for key in keys)
    assert all(value.dim() == 1 for value in store.values())  # features per image, no class axis
    reused = teacher_cache.TeacherOutputCache(base_only.teacher, store)
    logits = reused.logits(image, keys, base_only.train_class_vectors)
    assert reused.computed == 0 and logits.shape == (len(keys), N_BASE)
    torch.testing.assert_close(logits, base_only.teacher.logits(image, base_only.train_class_vectors))

    b2n_key, base_only_key = base2novel.teacher_disk_key(), base_only.teacher_disk_key()
    assert {k for k in b2n_key if b2n_key[k] != base_only_key[k]} == {"train_images", "train_list_sha256"}
    folder = str(tmp_path / "disk_cache")
    teacher_cache.TeacherFeatureFiles(folder, b2n_key).write_key(torch.float16)
    with pytest.raises(UserError, match="train_list_sha256"):
        teacher_cache.TeacherFeatureFiles(folder, base_only_key).check_key()
    teacher_cache.clear()


@pytest.mark.parametrize("opts, key", [
    (["TRAINER.MODAL", "inductive"], "TRAINER.MODAL"),
    (["TRAINER.PROMPTKD.SELECT_HOLDOUT", 1.0], "TRAINER.PROMPTKD.SELECT_HOLDOUT"),
    (["TRAINER.PROMPTKD.SELECT_HOLDOUT", -0.25], "TRAINER.PROMPTKD.SELECT_HOLDOUT"),
])
def test_bad_option_values_are_user_errors_naming_the_key(world, tmp_path, opts, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        _trainer(world, tmp_path / "run", opts=opts)


# ----------------------------------------------------------------------------------------- held-out selection
HOLDOUT = ["TRAINER.PROMPTKD.SELECT_HOLDOUT", 0.5, "OPTIM.MAX_EPOCH", 3]


@pytest.fixture(scope="module")
def selected_run(world, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("holdout") / "run"
    trainer = _trainer(world, output_dir, opts=HOLDOUT)
    trainer.train()
    return trainer, output_dir


def test_held_out_images_leave_training(world, selected_run):
    trainer, _ = selected_run
    held = {item.impath for item in trainer.holdout_items}
    trained = [item.impath for item in trainer.train_loader_x.dataset.data_source]
    assert len(held) == 5 and len(trained) == 5  # half of the 10 training images
    assert held.isdisjoint(trained) and held | set(trained) == set(_labels_of_paths(world))
    assert [item.impath for item in trainer.dm.dataset.train_x] == trained  # what the caches key on
    assert {item.impath for item in trainer.holdout_loader.dataset.data_source} == held


def test_agreement_is_recorded_each_epoch_and_the_selected_entry_sits_beside_best_and_last(selected_run):
    trainer, output_dir = selected_run
    results = _results(output_dir)
    assert set(results) == DEFAULT_KEYS | {SELECTED_BY_AGREEMENT}
    history = trainer.record.agreement_by_epoch
    assert sorted(history) == [1, 2, 3] and all(0.0 <= value <= 100.0 for value in history.values())
    selected = results[SELECTED_BY_AGREEMENT]
    best_agreement = max(history.values())
    assert selected["epoch"] == min(e for e, value in history.items() if value == best_agreement)
    assert selected["agreement"] == pytest.approx(best_agreement, abs=1e-4)
    assert selected["holdout_images"] == 5
    assert {k: selected[k] for k in ("epoch", "base", "new", "hm")} == trainer.record.entry(selected["epoch"])
    assert results["best"]["epoch"] == trainer.record.best_epoch and results["last"]["epoch"] == 3


def test_agreement_checkpoint_reloads_and_reproduces_the_recorded_numbers(world, selected_run, tmp_path):
    trainer, output_dir = selected_run
    results = _results(output_dir)
    selected = results[SELECTED_BY_AGREEMENT]
    path = os.path.join(str(output_dir), CHECKPOINT_MODEL_NAME, AGREEMENT_FILE_NAME)
    assert os.path.isfile(path)
    with open(os.path.join(str(output_dir), CHECKPOINT_MODEL_NAME, "checkpoint"), encoding="utf-8") as stream:
        assert stream.read().strip() != AGREEMENT_FILE_NAME  # never a resume point

    fresh = _trainer(world, tmp_path / "fresh", opts=HOLDOUT)
    assert fresh.load_agreement_model(str(output_dir)) == selected["epoch"]
    assert fresh.evaluate("val") == pytest.approx(selected["base"], abs=1e-3)
    assert fresh.evaluate("test") == pytest.approx(selected["new"], abs=1e-3)
    assert fresh.measure_agreement() == pytest.approx(selected["agreement"], abs=1e-3)


class _Stop(Exception):
    pass


def test_resume_keeps_the_agreement_record(world, selected_run, tmp_path):
    _, uninterrupted_dir = selected_run
    output_dir = tmp_path / "resumed"
    first = _trainer(world, output_dir, opts=HOLDOUT)
    original_run_epoch = first.run_epoch

    def stop_in_epoch_3():
        if first.epoch == 2:
            raise _Stop()
        original_run_epoch()

    first.run_epoch = stop_in_epoch_3
    with pytest.raises(_Stop):
        first.train()
    assert sorted(first.record.agreement_by_epoch) == [1, 2]

    second = _trainer(world, output_dir, opts=HOLDOUT)
    second.train()  # resumes from the epoch-2 resume point
    assert second.start_epoch == 2
    assert {e: second.record.agreement_by_epoch[e] for e in (1, 2)} == first.record.agreement_by_epoch
    resumed, reference = _results(output_dir), _results(uninterrupted_dir)
    for entry in ("best", "last", SELECTED_BY_AGREEMENT):
        assert resumed[entry] == reference[entry]


def test_defaults_keep_promptkd_results_and_files(world, tmp_path):
    trainer = _trainer(world, tmp_path / "run")
    assert trainer.holdout_loader is None and trainer.holdout_items == []
    trainer.train()
    assert set(_results(tmp_path / "run")) == DEFAULT_KEYS
    assert trainer.record.agreement_by_epoch == {}
    assert not os.path.exists(os.path.join(str(tmp_path / "run"), CHECKPOINT_MODEL_NAME, AGREEMENT_FILE_NAME))


def test_parse_results_tables_the_agreement_selected_entry(selected_run):
    from tools import parse_results

    _, output_dir = selected_run
    text = parse_results.format_markdown(parse_results.group_runs(parse_results.load_results(str(output_dir))))
    assert "agreement-selected checkpoint" in text and "best-on-base checkpoint" in text


def test_two_processes_count_every_held_out_image_once(world, tmp_path):
    """Under DDP each process scores a disjoint shard of the held-out images and the counts are summed:
    the agreement record and results.json equal the one-process run's."""
    from ddp_launch import cli, run_processes
    from test_ddp_promptkd import promptkd_argv

    opts = ("TRAINER.PROMPTKD.SELECT_HOLDOUT", "0.2")  # 2 of 10 held out: 8 train = one global batch of 8
    single, two = tmp_path / "single", tmp_path / "two"
    status, err = cli(promptkd_argv(world, single, *opts, "DATALOADER.SEEDED_AUGMENTATION", "True"))
    assert status == 0, err
    outcomes = run_processes(cli, 2, (promptkd_argv(world, two, *opts),))
    assert [status for status, _ in outcomes] == [0, 0], outcomes
    one, both = _results(single), _results(two)
    assert one[SELECTED_BY_AGREEMENT]["holdout_images"] == 2
    for entry in ("best", "last", SELECTED_BY_AGREEMENT):
        assert both[entry] == one[entry]
    log = (two / "log.txt").read_text()
    assert "world size: 2" in log and "Agreement with the teacher on 2 held-out training images" in log
