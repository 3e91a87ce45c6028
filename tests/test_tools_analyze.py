"""tools/analyze.py and tools/analysis: metrics on synthetic features, the feature file, and the whole
command on tiny PromptKD / PromptKD_RSM runs trained here (features, labels, base/new flags, JSON, PNGs)."""
import json
import os
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402

import datasets  # noqa: F401,E402  (registers the readers)
import trainers  # noqa: F401,E402  (registers the trainers)
from dassl.engine import build_trainer  # noqa: E402
from dassl.utils import set_random_seed  # noqa: E402
from tools import analyze  # noqa: E402
from tools.analysis import metrics, plots  # noqa: E402
from tools.analysis.features import FeatureSet  # noqa: E402
from tools.make_fake_dataset import make_fake_dataset  # noqa: E402

import trainers_tiny_setup as tiny  # noqa: E402

NUM_CLASSES = 6  # base: first 3, new: last 3
TEST_PER_CLASS = 4


# ----------------------------------------------------------------------------- metrics


def _blobs(n_classes=4, per_class=10, dim=6, spread=0.1, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 5
    labels = np.repeat(np.arange(n_classes), per_class)
    return centres[labels] + rng.normal(size=(len(labels), dim)) * spread, labels


def test_distance_ratio_exact():
    x = np.array([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 2.0]])
    result = metrics.distance_ratio(x, np.array([0, 0, 1, 1]))
    assert result == {"intra": pytest.approx(1.0), "inter": pytest.approx(10.0), "ratio": pytest.approx(0.1)}
    assert metrics.distance_ratio(x, np.zeros(4, dtype=int))["ratio"] is None  # one class: no inter distance


def test_separability_orders_tight_and_loose_clusters():
    tight = metrics.separability(*_blobs(spread=0.1))
    loose = metrics.separability(*_blobs(spread=5.0))
    assert tight["intra_inter_ratio"] < 0.1 < loose["intra_inter_ratio"]
    assert tight["silhouette"] > 0.9 > loose["silhouette"]
    assert tight["knn_accuracy"] == 100.0 and loose["knn_accuracy"] < 100.0
    assert (tight["n_images"], tight["n_classes"], tight["dim"], tight["knn_k"]) == (40, 4, 6, 5)


def test_silhouette_undefined_cases():
    x = np.arange(6, dtype=float).reshape(3, 2)
    assert metrics.silhouette(x, np.array([0, 0, 0])) is None  # one class
    assert metrics.silhouette(x, np.array([0, 1, 2])) is None  # one image per class
    assert metrics.silhouette(x, np.array([0, 0, 1])) is not None


def test_knn_leaves_the_row_itself_out_even_among_duplicates():
    # Each point has an exact duplicate of the other class: with itself left out, 1-NN is always wrong.
    x = np.array([[0.0], [0.0], [5.0], [5.0]])
    assert metrics.knn_accuracy(x, np.array([0, 1, 0, 1]), k=1) == 0.0
    assert metrics.knn_accuracy(x, np.array([0, 0, 1, 1]), k=1) == 100.0
    assert metrics.knn_accuracy(x[:1], np.array([0]), k=3) is None


def test_knn_tie_goes_to_the_nearest_class():
    # k = 2 on the points 0, 1, -2: rows 0 and 1 get one vote per class (a tie), row 2 two votes for the
    # class of rows 0 and 1. Nearest first, rows 0 and 1 are right and row 2 wrong, whichever labels the
    # classes carry; a rule by label value (lowest or highest first) would get one of the cases all wrong.
    x = np.array([[0.0], [1.0], [-2.0]])
    assert metrics.nearest_neighbours(x, 2).tolist() == [[1, 2], [0, 2], [0, 1]]
    assert metrics.knn_accuracy(x, np.array([2, 2, 1]), k=2) == pytest.approx(200.0 / 3)
    assert metrics.knn_accuracy(x, np.array([1, 1, 2]), k=2) == pytest.approx(200.0 / 3)


def test_effective_rank():
    eye = np.eye(5)
    isotropic = np.concatenate([eye, -eye])  # centred, 5 equal singular values
    assert metrics.effective_rank(isotropic) == pytest.approx(5.0)
    line = np.outer(np.arange(10.0), np.array([1.0, 2.0, 3.0]))
    assert metrics.effective_rank(line) == pytest.approx(1.0)
    assert metrics.effective_rank(np.ones((4, 3))) == 0.0
    rng = np.random.default_rng(0)
    assert 1.0 < metrics.effective_rank(rng.normal(size=(50, 8))) <= 8.0


def test_fscore_of_a_dimension_that_encodes_one_class_is_the_largest_in_its_row():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    x = rng.normal(size=(100, 6))
    x[:, 2] += 3.0 * (labels == 1)  # dimension 2 tells class 1 apart, nothing else does
    scores = metrics.fscore_matrix(x, labels, np.arange(4))
    assert scores.shape == (4, 6)
    assert int(np.argmax(scores[1])) == 2
    assert scores[1, 2] == scores[:, 2].max()  # and no other class is told apart as well by it
    assert scores[1, 2] > 10 * np.delete(scores[1], 2).max()
    x[:, 4] = 7.0  # a constant dimension scores 0, not NaN
    assert np.all(metrics.fscore_matrix(x, labels, np.arange(4))[:, 4] == 0.0)


def test_class_vector_accuracy_restricted_to_the_given_classes():
    vectors = np.eye(3)
    features = np.array([[1.0, 0.9, 0.0], [0.0, 0.1, 1.0]])
    assert metrics.class_vector_accuracy(features, np.array([0, 2]), vectors, np.arange(3)) == 100.0
    # against classes 1 and 2 only, the first row (class 0) cannot be right
    assert metrics.class_vector_accuracy(features, np.array([0, 2]), vectors, np.array([1, 2])) == 50.0


def test_tsne_is_deterministic_and_subsample_is_fixed():
    x, _ = _blobs(n_classes=3, per_class=8)
    first, second = plots.tsne_embedding(x), plots.tsne_embedding(x)
    assert first.shape == (24, 2) and np.array_equal(first, second)
    assert plots.tsne_perplexity(1000) == 30.0 and plots.tsne_perplexity(10) == 3.0
    keep = plots.subsample(100, 10)
    assert len(keep) == 10 and np.array_equal(keep, plots.subsample(100, 10)) and np.all(np.diff(keep) > 0)
    assert np.array_equal(plots.subsample(5, 10), np.arange(5))


def test_feature_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    features = FeatureSet(backbone=rng.normal(size=(4, 3)).astype(np.float32),
                          projected=rng.normal(size=(4, 5)).astype(np.float32),
                          labels=np.array([0, 1, 2, 2]), is_new=np.array([False, False, True, True]),
                          classnames=["a", "b", "c"], class_vectors=np.eye(3, 5, dtype=np.float32),
                          meta={"label": "run", "protocol": "base2novel", "num_base": 2, "checkpoint_epoch": 3})
    loaded = FeatureSet.load(features.save(str(tmp_path / "f.npz")))
    assert loaded.manifold is None and loaded.classnames == ["a", "b", "c"] and loaded.num_base == 2
    assert np.array_equal(loaded.projected, features.projected) and loaded.is_new.dtype == bool
    assert loaded.meta["checkpoint_epoch"] == 3
    assert set(loaded.groups()) == {"all", "base", "new"}


def test_run_labels_are_distinct():
    assert analyze.run_labels(["a/x/seed1", "b/y/seed1"], ["PromptKD", "PromptKD_RSM"]) == ["PromptKD",
                                                                                             "PromptKD_RSM"]
    labels = analyze.run_labels(["out/w0/seed1", "out/w50/seed1"], ["PromptKD_RSM", "PromptKD_RSM"])
    assert labels == ["PromptKD_RSM (w0/seed1)", "PromptKD_RSM (w50/seed1)"]


# ----------------------------------------------------------------------------- command-line errors


def test_missing_extra_is_one_error_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    assert analyze.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error:") and 'pip install -e ".[analysis]"' in err[0]
    assert "scikit-learn" in err[0]


def test_missing_config_yaml_is_one_error_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert analyze.main([str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error:") and "config.yaml" in err[0]


def test_a_trainer_without_a_student_is_refused(tmp_path, capsys):
    run = tmp_path / "zs"
    run.mkdir()
    (run / "config.yaml").write_text("TRAINER:\n  NAME: ZeroshotCLIP\n")
    assert analyze.main([str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a distillation trainer" in err[0]
    (run / "config.yaml").write_text("TRAINER:\n  NAME: PromptKD\n")
    assert analyze.main([str(run), "--space", "manifold"]) == 2
    assert "has no RSM manifold" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real tiny runs


def _noisy_fake_dataset(root):
    """The fake dataset with per-image pixel noise, so that images of a class are not all identical."""
    folder = make_fake_dataset(tiny.DATASET, root, num_classes=NUM_CLASSES, train_per_class=2,
                               test_per_class=TEST_PER_CLASS, image_size=16)
    rng = np.random.default_rng(0)
    for path in sorted(folder.rglob("*.jpg")):
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        noisy = np.clip(pixels + rng.normal(scale=40.0, size=pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(path, format="JPEG", quality=95)


def _train(world, trainer_name, output_dir):
    cfg = tiny.make_cfg(world["root"], trainer_name, str(output_dir), world["weights"], world["teacher_root"])
    set_random_seed(cfg.SEED)
    build_trainer(cfg).train()
    (output_dir / "config.yaml").write_text(cfg.dump())  # what train.py saves in the run folder
    return output_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("analyze")
    root = str(base / "data")
    _noisy_fake_dataset(root)
    weights = tiny.write_clip_weights(str(base / "weights"))
    teacher_root = str(base / "teacher_model")
    ckpt = os.path.join(teacher_root, tiny.DATASET, "VLPromptLearner", "model-best.pth.tar")
    tiny.write_teacher_checkpoint(ckpt, tiny.teacher_state_dict(weights[1], tiny.dataset_classnames(root)))
    world = {"root": root, "weights": weights, "teacher_root": teacher_root}
    return {"base": base, "root": root, "classnames": tiny.dataset_classnames(root),
            "PromptKD": _train(world, "PromptKD", base / "runs" / "pkd" / "seed1"),
            "PromptKD_RSM": _train(world, "PromptKD_RSM", base / "runs" / "rsm" / "seed1")}


def _opens(path):
    with Image.open(path) as image:
        image.load()
        pixels = np.asarray(image.convert("L"))
    return image.size, float(pixels.std())


def _check_group(numbers, n_images, n_classes, dim):
    assert (numbers["n_images"], numbers["n_classes"], numbers["dim"]) == (n_images, n_classes, dim)
    assert numbers["intra_class_distance"] > 0 and numbers["inter_class_distance"] > 0
    assert numbers["intra_inter_ratio"] == pytest.approx(numbers["intra_class_distance"]
                                                         / numbers["inter_class_distance"])
    assert -1.0 <= numbers["silhouette"] <= 1.0
    assert 0.0 <= numbers["knn_accuracy"] <= 100.0 and numbers["knn_k"] == 5
    assert 1.0 <= numbers["effective_rank"] <= min(n_images, dim)


@pytest.fixture(scope="module")
def rsm_analysis(runs):
    """analyze.py on the PromptKD_RSM run, with the default output folder; returns (folder, stdout)."""
    from io import StringIO
    from contextlib import redirect_stdout

    stdout = StringIO()
    with redirect_stdout(stdout):
        status = analyze.main([str(runs["PromptKD_RSM"]), "--root", runs["root"]])
    assert status == 0
    return runs["PromptKD_RSM"] / "analysis", stdout.getvalue()


def test_analyze_an_rsm_run(runs, rsm_analysis):
    run_dir = runs["PromptKD_RSM"]
    out, stdout = rsm_analysis
    assert out == run_dir / "analysis"  # the default for one run
    assert "Extracting features of the base classes" in stdout and "t-SNE of PromptKD_RSM" in stdout

    features = np.load(out / "features.npz")
    n = NUM_CLASSES * TEST_PER_CLASS
    assert features["backbone"].shape == (n, 32)  # tiny student embedding width
    assert features["projected"].shape == (n, 48)  # the teacher's width, after the projector
    assert features["manifold"].shape == (n, 8) and features["manifold_text"].shape == (NUM_CLASSES, 8)
    assert features["class_vectors"].shape == (NUM_CLASSES, 48)
    assert np.allclose(np.linalg.norm(features["class_vectors"], axis=1), 1.0, atol=1e-4)
    labels, is_new = features["labels"], features["is_new"]
    assert np.bincount(labels).tolist() == [TEST_PER_CLASS] * NUM_CLASSES  # every class, global indices
    assert np.array_equal(is_new, labels >= 3)
    assert features["classnames"].tolist() == runs["classnames"]
    assert str(features["protocol"]) == "base2novel" and int(features["num_base"]) == 3

    record = json.loads((out / "analysis.json").read_text())
    assert record["split"] == "all" and record["knn_k"] == 5 and len(record["runs"]) == 1
    (entry,) = record["runs"]
    assert entry["trainer"] == "PromptKD_RSM" and entry["checkpoint_epoch"] == 1
    assert entry["features_file"] == "features.npz" and entry["checkpoint"] == "model-best.pth.tar"
    assert set(entry["separability"]) == {"backbone", "projected", "manifold"}
    dims = {"backbone": 32, "projected": 48, "manifold": 8}
    for space, groups in entry["separability"].items():
        assert set(groups) == {"all", "base", "new"}
        _check_group(groups["all"], n, NUM_CLASSES, dims[space])
        _check_group(groups["base"], n // 2, 3, dims[space])
        _check_group(groups["new"], n // 2, 3, dims[space])
    # The accuracy of the loaded checkpoint against the teacher's class vectors is the run's own result.
    results = json.loads((run_dir / "results.json").read_text())
    accuracy = entry["class_vector_accuracy"]
    assert accuracy["base"] == pytest.approx(results["best"]["base"], abs=1e-3)
    assert accuracy["new"] == pytest.approx(results["best"]["new"], abs=1e-3)
    assert 0.0 <= accuracy["all"] <= 100.0

    for name in ("tsne.png", "fscore.png"):
        size, contrast = _opens(out / name)
        assert size[0] > 300 and size[1] > 200 and contrast > 5.0  # a real picture, not a blank canvas


def test_analyze_two_runs_side_by_side(runs, tmp_path, capsys):
    out = tmp_path / "both"
    argv = [str(runs["PromptKD"]), str(runs["PromptKD_RSM"]), "--split", "val", "--load-epoch", "1",
            "--out", str(out), "--opts", "DATASET.ROOT", runs["root"]]
    assert analyze.main(argv) == 0
    capsys.readouterr()
    record = json.loads((out / "analysis.json").read_text())
    host, rsm = record["runs"]
    assert (host["label"], rsm["label"]) == ("PromptKD", "PromptKD_RSM")
    assert host["checkpoint"] == "model.pth.tar-1" and record["split"] == "val"
    assert "manifold" not in host["separability"] and "manifold" in rsm["separability"]
    for entry in (host, rsm):
        assert set(entry["separability"]["projected"]) == {"all", "base"}  # val: the base classes only
        features = FeatureSet.load(str(out / entry["features_file"]))
        assert len(features.labels) == 3 * TEST_PER_CLASS
        assert features.labels.max() == 2 and not features.is_new.any()
    assert host["features_file"] == "features_1_PromptKD.npz"
    size, _ = _opens(out / "tsne.png")
    assert size[0] > 1.5 * size[1]  # two panels side by side (one panel with its legend is narrower)


def test_the_analysis_is_deterministic(runs, rsm_analysis, tmp_path, capsys):
    first_out, _ = rsm_analysis
    again = tmp_path / "again"
    assert analyze.main([str(runs["PromptKD_RSM"]), "--root", runs["root"], "--out", str(again)]) == 0
    capsys.readouterr()
    first, second = (json.loads((out / "analysis.json").read_text())["runs"][0] for out in (first_out, again))
    assert first["separability"] == second["separability"]
    assert first["class_vector_accuracy"] == second["class_vector_accuracy"]
    a, b = (np.load(out / "features.npz") for out in (first_out, again))
    for key in ("backbone", "projected", "manifold", "labels"):
        assert np.array_equal(a[key], b[key]), key
    for name in ("tsne.png", "fscore.png"):
        with Image.open(first_out / name) as one, Image.open(again / name) as two:
            assert np.array_equal(np.asarray(one), np.asarray(two)), name


def test_missing_checkpoint_is_one_error_line(runs, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(runs["PromptKD"], run, ignore=shutil.ignore_patterns("*.tar*", "analysis"))
    assert analyze.main([str(run), "--root", runs["root"], "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("Error:") and "model-best.pth.tar" in err[-1]
