"""Bad input: every broken folder stops with a UserError naming the path and pointing to DATASETS.md."""
import importlib.util
import os
import sys

import pytest

import datasets  # noqa: F401  (registers the readers)
from dassl.config import get_cfg_default
from dassl.data.datasets import build_dataset
from dassl.utils import UserError
from tools.check_dataset import main as check_main
from tools.make_fake_dataset import make_fake_dataset


def make_cfg(root, name, *opts):
    cfg = get_cfg_default()
    cfg.merge_from_list(["DATASET.ROOT", str(root), "DATASET.NAME", name, "SEED", 1, *opts])
    return cfg


needs_scipy = pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="SciPy not installed")


def read(root, name, *opts):
    return build_dataset(make_cfg(root, name, *opts))


def expect_error(root, name, *fragments, opts=()):
    with pytest.raises(UserError) as info:
        read(root, name, *opts)
    message = str(info.value)
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


def test_empty_root_is_reported(tmp_path):
    cfg = make_cfg(tmp_path, "OxfordPets")
    cfg.DATASET.ROOT = ""
    with pytest.raises(UserError, match="DATASET.ROOT is empty"):
        build_dataset(cfg)


def test_missing_dataset_folder(tmp_path):
    expect_error(tmp_path, "OxfordPets", tmp_path / "oxford_pets", "DATASETS.md", "dataset folder not found")


def test_missing_image_folder(tmp_path):
    (tmp_path / "eurosat").mkdir()
    expect_error(tmp_path, "EuroSAT", tmp_path / "eurosat" / "2750", "image folder not found")


def test_missing_split_without_raw_annotations(tmp_path):
    dataset_dir = make_fake_dataset("OxfordPets", tmp_path, num_classes=3)
    (dataset_dir / "split_zhou_OxfordPets.json").unlink()
    (dataset_dir / "annotations" / "trainval.txt").unlink()
    expect_error(tmp_path, "OxfordPets", dataset_dir / "split_zhou_OxfordPets.json",
                 dataset_dir / "annotations" / "trainval.txt", "DATASETS.md")


@pytest.mark.parametrize("name, missing", [
    ("FGVCAircraft", "variants.txt"),
    ("FGVCAircraft", "images_variant_test.txt"),
    ("ImageNet", "classnames.txt"),
    ("ImageNetR", "classnames.txt"),
    ("SUN397", "ClassName.txt"),
    ("UCF101", "ucfTrainTestlist/classInd.txt"),
    pytest.param("OxfordFlowers", "imagelabels.mat", marks=needs_scipy),
    pytest.param("StanfordCars", "devkit/cars_meta.mat", marks=needs_scipy),
])
def test_missing_annotation_file(tmp_path, name, missing):
    dataset_dir = make_fake_dataset(name, tmp_path, num_classes=3)
    for split_file in dataset_dir.glob("split_zhou_*.json"):
        split_file.unlink()
    (dataset_dir / missing).unlink()
    expect_error(tmp_path, name, dataset_dir / missing, "DATASETS.md")


def test_mat_fallback_without_scipy_says_what_to_do(tmp_path, monkeypatch):
    dataset_dir = make_fake_dataset("OxfordFlowers", tmp_path, num_classes=2)
    (dataset_dir / "split_zhou_OxfordFlowers.json").unlink()
    (dataset_dir / "imagelabels.mat").touch()  # present whether or not SciPy wrote it
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # makes `from scipy.io import ...` fail
    expect_error(tmp_path, "OxfordFlowers", "needs SciPy", dataset_dir / "imagelabels.mat",
                 "split_zhou_OxfordFlowers.json")


def test_missing_imagenet_split_folder(tmp_path):
    dataset_dir = make_fake_dataset("ImageNet", tmp_path, num_classes=2)
    for path in sorted((dataset_dir / "images" / "val").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (dataset_dir / "images" / "val").rmdir()
    expect_error(tmp_path, "ImageNet", dataset_dir / "images" / "val")


def test_split_referencing_missing_files_counts_and_shows_a_few(tmp_path):
    dataset_dir = make_fake_dataset("DescribableTextures", tmp_path, num_classes=4)
    images = sorted((dataset_dir / "images").rglob("*.jpg"))[:7]
    for image in images:
        image.unlink()
    message = expect_error(tmp_path, "DescribableTextures", "references 7 image file(s)",
                           dataset_dir / "split_zhou_DescribableTextures.json", "... and 2 more")
    assert sum(str(image) in message for image in images) == 5


def test_annotation_referencing_missing_images(tmp_path):
    dataset_dir = make_fake_dataset("FGVCAircraft", tmp_path, num_classes=3)
    next((dataset_dir / "images").glob("*.jpg")).unlink()
    expect_error(tmp_path, "FGVCAircraft", "references 1 image file(s)", "images_variant_")


def test_partition_with_unknown_class(tmp_path):
    dataset_dir = make_fake_dataset("SUN397", tmp_path, num_classes=3)
    (dataset_dir / "split_zhou_SUN397.json").unlink()
    with open(dataset_dir / "Testing_01.txt", "a") as f:
        f.write("/z/zoo/sun_1.jpg\n")
    expect_error(tmp_path, "SUN397", "'z/zoo'", "ClassName.txt")


def test_reading_writes_only_inside_the_dataset_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("AME_FEWSHOT_CACHE", raising=False)  # a configured cache folder would take the files
    root = tmp_path / "data"
    dataset_dir = make_fake_dataset("UCF101", root, num_classes=3)
    (dataset_dir / "split_zhou_UCF101.json").unlink()

    def snapshot():
        return sorted(str(p) for p in tmp_path.rglob("*"))

    before = snapshot()
    read(root, "UCF101", "DATASET.NUM_SHOTS", 1)
    created = set(snapshot()) - set(before)
    assert created and all(p.startswith(str(dataset_dir) + os.sep) for p in created)
    assert {os.path.basename(p) for p in created} == {"split_zhou_UCF101.json", "split_fewshot", "shot_1-seed_1.json"}


def test_check_tool_reports_an_undecodable_image(tmp_path, capsys):
    dataset_dir = make_fake_dataset("EuroSAT", tmp_path, num_classes=2)
    broken = sorted((dataset_dir / "2750").rglob("*.jpg"))[0]
    broken.write_bytes(b"not a jpeg")
    assert check_main(["eurosat", "--root", str(tmp_path), "--decode", "all"]) == 1
    out = capsys.readouterr().out
    assert "1 image(s) cannot be decoded" in out and str(broken) in out


def test_check_tool_reports_missing_folder_and_passes_good_one(tmp_path, capsys):
    assert check_main(["oxford_pets", "--root", str(tmp_path)]) == 1
    assert f"Problem: OxfordPets: dataset folder not found: expected a folder at {tmp_path / 'oxford_pets'}" \
        in capsys.readouterr().out
    make_fake_dataset("OxfordPets", tmp_path)
    assert check_main(["all", "--root", str(tmp_path)]) == 0
    assert "OK OxfordPets" in capsys.readouterr().out
