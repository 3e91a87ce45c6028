"""SynthShapes (benchmarks/synthshapes, datasets/synth_shapes.py): world, captions, writer + reader, pretraining,
plots, and the CI-sized benchmark end to end (checks that distillation actually learns)."""
import importlib.util
import json
import math
import re

import pytest
import torch

import clip
from benchmarks.synthshapes import captions as cap
from benchmarks.synthshapes.dataset_writer import (META_FILE, SPLIT_FILE, downstream_classnames,
                                                   write_dataset)
from benchmarks.synthshapes.plots import line_plot, read_entropy_curve
from benchmarks.synthshapes.pretrain import (PretrainSettings, _batch, _param_groups, caption_matches, caption_token_ids,
                                            checkpoint_paths, pretrain)
from benchmarks.synthshapes.tiny_clip import SPECS, init_state_dict
from benchmarks.synthshapes.world import COLOR_NAMES, COLORS, SHAPES, render, render_shifted


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_render_is_deterministic_and_draws_the_named_colour():
    n = 6
    shape = torch.full((n,), SHAPES.index("circle"))
    color = torch.arange(n) % len(COLOR_NAMES)
    size = torch.full((n,), 2)  # large
    a = render(shape, color, size, _gen(3))
    b = render(shape, color, size, _gen(3))
    assert a.shape == (n, 3, 32, 32) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    centre = a[:, :, 14:18, 14:18].mean(dim=(2, 3))
    expected = torch.tensor([COLORS[COLOR_NAMES[i]] for i in color.tolist()])
    assert (centre - expected).abs().max() < 0.12  # colour jitter is +-0.06, pixel noise 0.02


def test_shifts_change_the_images_and_unknown_shift_fails():
    args = (torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([0, 1]))
    clean = render_shifted(*args, _gen(1), "clean")
    noisy = render_shifted(*args, _gen(1), "noisy")
    assert noisy.std(dim=(2, 3)).mean() != clean.std(dim=(2, 3)).mean()
    with pytest.raises(ValueError, match="unknown shift"):
        render_shifted(*args, _gen(1), "foggy")


def test_captions_fit_the_context_length_and_class_names_read_naturally():
    rows = cap.all_captions()
    assert len(rows) == len(cap.CAPTION_TEMPLATES) * len(SHAPES) * len(COLOR_NAMES) * 3
    t, s, c, z, text = rows[123]
    assert cap.caption_index(t, s, c, z) == 123 and SHAPES[s] in text and COLOR_NAMES[c] in text
    ids = caption_token_ids(SPECS["student"].context_length)
    assert ids.shape == (len(rows), 16)
    assert torch.equal(ids[123], clip.tokenize([text], context_length=16)[0])
    assert cap.class_name("red", "triangle") == "red triangle"
    assert len(set(downstream_classnames())) == 40


def test_caption_matches_counts_every_true_caption_as_positive():
    shape, color, size = torch.tensor([0, 0, 1]), torch.tensor([2, 2, 2]), torch.tensor([0, 1, 0])
    with_size = cap.TEMPLATE_MENTIONS_SIZE.index(True)
    without_size = cap.TEMPLATE_MENTIONS_SIZE.index(False)
    template = torch.tensor([with_size, without_size, with_size])
    m = caption_matches(shape, color, size, template)
    assert m.diagonal().all()
    assert m[0, 1]            # caption 1 has no size: it describes image 0 too
    assert not m[1, 0]        # caption 0 names size 0, image 1 has size 1
    assert not m[2, 0] and not m[0, 2]   # different shape


def test_pretraining_batch_renders_each_caption_twice_and_every_image_has_its_caption():
    settings = PretrainSettings(role="student", steps=1, batch_size=12)
    assert settings.images_per_caption == 2 and settings.lr == 2e-3   # the student's default
    assert PretrainSettings(role="teacher", steps=1).lr == 1e-3
    ids = caption_token_ids(16)
    images, text, matches = _batch(0, settings, ids)
    assert images.shape == (12, 3, 32, 32) and text.shape == (6, 16) and matches.shape == (12, 6)
    # image 2k and 2k+1 are renderings of caption k
    assert matches[torch.arange(12), torch.arange(12) // 2].all()
    again = _batch(0, settings, ids)
    assert torch.equal(images, again[0]) and torch.equal(text, again[1])   # seeded by (seed, step)
    with pytest.raises(ValueError, match="multiple"):
        PretrainSettings(role="student", steps=1, batch_size=7)


def test_writer_and_reader_give_a_base2novel_dataset(tmp_path):
    from dassl.config import get_cfg_default
    from dassl.data.datasets import build_dataset
    import datasets  # noqa: F401  (registers the readers)
    from trainers.config import extend_cfg

    counts = {"train": 3, "val": 1, "test": 2}
    folder = write_dataset(tmp_path, "noisy", counts=counts, num_classes=4)
    split = json.loads((folder / SPLIT_FILE).read_text())
    assert [len(split[k]) for k in ("train", "val", "test")] == [12, 4, 8]
    assert split["train"][0][2] == downstream_classnames(4)[0]
    mtime = (folder / META_FILE).stat().st_mtime_ns
    assert write_dataset(tmp_path, "noisy", counts=counts, num_classes=4) == folder   # reused, not rewritten
    assert (folder / META_FILE).stat().st_mtime_ns == mtime

    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_file("configs/datasets/synth_shapes_noisy.yaml")
    cfg.DATASET.ROOT, cfg.SEED, cfg.DATASET.NUM_SHOTS = str(tmp_path), 1, 0
    data = build_dataset(cfg, protocol="base2novel")
    assert data.classnames == downstream_classnames(4)
    assert len(data.train_x) == 12 and len(data.val) == 4 and len(data.test) == 4   # val/test: base/new test
    assert data.base_classnames == downstream_classnames(4)[:2]


def test_reader_explains_how_to_render_a_missing_dataset(tmp_path):
    from dassl.config import get_cfg_default
    from dassl.data.datasets import build_dataset
    import datasets  # noqa: F401
    from trainers.config import extend_cfg

    (tmp_path / "synth_shapes_textured" / "images").mkdir(parents=True)
    cfg = extend_cfg(get_cfg_default())
    cfg.merge_from_file("configs/datasets/synth_shapes_textured.yaml")
    cfg.DATASET.ROOT = str(tmp_path)
    with pytest.raises(Exception, match=r"python -m [\w.]+\.dataset_writer") as info:
        build_dataset(cfg)
    # the module the message tells the user to run exists
    module = re.search(r"python -m ([\w.]+)", str(info.value)).group(1)
    assert module == "benchmarks.synthshapes.dataset_writer" and importlib.util.find_spec(module) is not None


def test_tiny_clip_state_dict_builds_with_context_length_16():
    model = clip.build_model(init_state_dict(SPECS["student"], seed=0))
    assert model.context_length == 16 and model.visual.input_resolution == 32
    feats = model.encode_text(clip.tokenize(["a photo of a red triangle."], context_length=16))
    assert feats.shape == (1, SPECS["student"].embed_dim)


def test_pretrain_writes_resumes_and_reuses(tmp_path):
    settings = PretrainSettings(role="student", steps=4, batch_size=8, warmup=1)
    final, meta_path, partial = checkpoint_paths(settings, tmp_path)
    messages = []
    path, meta = pretrain(settings, tmp_path, save_every=2, print_every=2, log=messages.append, eval_per_class=1)
    assert path == final and final.is_file() and not partial.exists()
    state = torch.load(final, weights_only=True)
    assert "visual.conv1.weight" in state and state["positional_embedding"].shape[0] == 16
    assert 0.0 <= meta["zero_shot_acc"] <= 100.0

    again = []
    pretrain(settings, tmp_path, log=again.append)
    assert any("reusing" in m for m in again)

    # Resume: a partial state at step 3 is picked up and only the last step is trained.
    final.unlink()
    meta_path.unlink()
    model = clip.build_model(init_state_dict(SPECS["student"], 0))
    opt = torch.optim.AdamW(_param_groups(model, 0.1))
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 3, "elapsed": 1.0}, partial)
    resumed = []
    pretrain(settings, tmp_path, log=resumed.append, eval_per_class=1)
    assert any("resuming from step 3" in m for m in resumed) and final.is_file()


def test_pretrain_switches_threads_at_the_given_step_and_is_reproducible(tmp_path):
    """--grow-threads is tied to a step, so two runs with the same schedule give the same weights."""
    settings = PretrainSettings(role="student", steps=3, batch_size=8, warmup=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = []
        for name in ("a", "b"):
            messages = []
            path, _ = pretrain(settings, tmp_path / name, print_every=10, log=messages.append, eval_per_class=1,
                               grow_threads=(2, 2))
            assert any("step 2: now 2 threads" in m for m in messages)
            assert torch.get_num_threads() == 2
            torch.set_num_threads(1)
            runs.append(torch.load(path, weights_only=True))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_entropy_curve_is_read_from_the_training_log_and_plotted(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text(
        "epoch [1/2] batch [5/10] time 0.1 (0.1) loss 3.0 (3.0) kd 1.0 (1.0) rsm 2.0 (2.0) H 4.2000 (4.2000) "
        "max_p 0.0200 (0.0200) lr 1e-05 eta 0:00:01\n"
        "something else\n"
        "epoch [2/2] batch [10/10] time 0.1 (0.1) loss 1.0 (1.0) kd 1.0 (1.0) rsm 0.1 (0.5) H 0.0100 (2.1000) "
        "max_p 0.9900 (0.5000) lr 1e-05 eta 0:00:00\n")
    assert read_entropy_curve(log) == [(5, 4.2, 0.02), (20, 0.01, 0.99)]
    png = tmp_path / "plot.png"
    line_plot(png, [("a", [0, 1, 10], [1.0, 2.0, 1.5], [0.1, 0.2, 0.1])], "t", "x", "y", log_x=True)
    assert png.stat().st_size > 1000


def test_tiny_benchmark_end_to_end_learns(tmp_path):
    """The CI-sized pipeline: pretraining, zero-shot, teacher tuning, PromptKD and PromptKD_RSM, report."""
    from benchmarks.synthshapes.benchmark import PLANS, Benchmark

    bench = Benchmark(PLANS["tiny"], tmp_path / "cache", tmp_path / "out", workers=2, threads=1)
    summary = bench.run()
    row = summary["datasets"]["SynthShapes"]
    zero_shot = row["student_zero_shot"]["hm"]
    distilled = row["PromptKD_best"]["hm"]
    assert distilled > zero_shot, f"distilled student HM {distilled:.1f} <= its zero-shot HM {zero_shot:.1f}"
    assert row["PromptKD_RSM_w50_best"]["n"] == 1
    assert (tmp_path / "out" / "summary.md").is_file() and (tmp_path / "out" / "hm_vs_omega.csv").is_file()
    assert summary["entropy"]["runs"]["50"][0]["first_H"] <= math.log(32 + 10) + 1e-3
    # Zero-shot runs are cached beside the CLIPs and copied into the output folder.
    key = bench._key("clean")
    cached = bench._zeroshot_dir(bench.zeroshot_root("student"), key, "student") / "results.json"
    copied = tmp_path / "out" / "zeroshot" / key / "ZeroshotCLIP" / "synth_shapes_student" / "results.json"
    assert cached.is_file() and str(tmp_path / "cache") in str(cached)
    assert copied.read_text() == cached.read_text()


def test_benchmark_sets_aside_runs_made_from_other_inputs(tmp_path):
    from benchmarks.synthshapes.benchmark import PLANS, Benchmark
    output = tmp_path / "out"
    bench = Benchmark(PLANS["tiny"], tmp_path / "cache", output, log=lambda *_: None)
    bench.weights = {"teacher": tmp_path / "teacher-a.pt", "student": tmp_path / "student-a.pt"}
    done = output / "base2new" / "run" / "results.json"
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    bench.set_aside_stale_runs()            # no stamp yet: runs of unknown origin are moved away
    assert not done.exists() and len(list(tmp_path.glob("out.stale-*/base2new/run/results.json"))) == 1
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    bench.set_aside_stale_runs()            # same inputs: kept
    assert done.exists()
    bench.weights["student"] = tmp_path / "student-b.pt"
    import time as _time
    _time.sleep(1.1)                        # the stale folder name has a one-second time stamp
    bench.set_aside_stale_runs()            # another student CLIP: moved
    assert not done.exists() and len(list(tmp_path.glob("out.stale-*"))) == 2


def test_teacher_and_zero_shot_cache_keys_follow_the_config_content_not_its_comments(tmp_path, monkeypatch):
    from benchmarks.synthshapes import benchmark
    from benchmarks.synthshapes.benchmark import CFG, PLANS, Benchmark

    bench = Benchmark(PLANS["tiny"], tmp_path / "cache", tmp_path / "out", log=lambda *_: None)
    bench.weights = {"teacher": tmp_path / "teacher-a.pt", "student": tmp_path / "student-a.pt"}
    before = (bench.teacher_root, bench.zeroshot_root("student"))
    copy = tmp_path / "repo"
    for trainer in ("PromptSRC", "CoOp"):
        source = benchmark.REPO_ROOT / "configs" / "trainers" / trainer / f"{CFG}.yaml"
        (copy / "configs" / "trainers" / trainer).mkdir(parents=True)
        (copy / "configs" / "trainers" / trainer / f"{CFG}.yaml").write_text(
            "# a comment that moved\n" + source.read_text().replace("\n", "  # and a trailing one\n", 1))
    monkeypatch.setattr(benchmark, "REPO_ROOT", copy)
    assert (bench.teacher_root, bench.zeroshot_root("student")) == before
    for trainer in ("PromptSRC", "CoOp"):
        path = copy / "configs" / "trainers" / trainer / f"{CFG}.yaml"
        path.write_text(path.read_text() + "SEED: 7\n")   # a setting changes
    assert bench.teacher_root != before[0] and bench.zeroshot_root("student") != before[1]
