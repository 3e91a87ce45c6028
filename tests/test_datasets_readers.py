"""Every registered reader reads its fake CoOp layout with the real class count and class names."""
import importlib.util
import os

import pytest

import datasets
from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, build_dataset
from datasets.ucf101 import action_folder
from datasets.sun397 import scene_classname
from datasets.stanford_cars import year_first
from tools.make_fake_dataset import LAYOUTS, make_fake_dataset


def make_cfg(root, name, *opts):
    cfg = get_cfg_default()
    cfg.merge_from_list(["DATASET.ROOT", str(root), "DATASET.NAME", name, "SEED", 1, *opts])
    return cfg


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    """All 15 datasets, real class counts, one image per class and split."""
    root = tmp_path_factory.mktemp("data")
    for name in LAYOUTS:
        make_fake_dataset(name, root, train_per_class=1, val_per_class=1, test_per_class=1)
    return root


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


# name -> (classes, base, new, check of the class names given the dataset folder)
EXPECTED = {
    "OxfordPets": (37, 19, 18, lambda names, d: names[:3] == ["abyssinian", "american_bulldog",
                                                              "american_pit_bull_terrier"]
                   and all(n == n.lower() for n in names) and "british_shorthair" in names),
    "Caltech101": (100, 50, 50, lambda names, d: names[:4] == ["face", "leopard", "motorbike", "airplane"]
                   and not {"BACKGROUND_Google", "Faces_easy", "Faces"} & set(names)),
    "StanfordCars": (196, 98, 98, lambda names, d: all(n.split(" ")[0].isdigit() for n in names)
                     and names[0] == "1998 AM General Model1 SUV"),
    "OxfordFlowers": (102, 51, 51, lambda names, d: names == [
        v for _, v in sorted(__import__("json").load(open(os.path.join(d, "cat_to_name.json"))).items(),
                             key=lambda kv: int(kv[0]))]),
    "Food101": (101, 51, 50, lambda names, d: names == sorted(os.listdir(os.path.join(d, "images")))),
    "FGVCAircraft": (100, 50, 50, lambda names, d: names == _lines(os.path.join(d, "variants.txt"))
                     and "F/A-105" in names and "Cessna 108" in names),
    "SUN397": (397, 199, 198, lambda names, d: names[:3] == ["striped_cat", "outdoor wooden_cat",
                                                            "indoor golden_cat"]),
    "DescribableTextures": (47, 24, 23, lambda names, d: names == sorted(os.listdir(os.path.join(d, "images")))),
    "EuroSAT": (10, 5, 5, lambda names, d: names == [
        "Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road", "Industrial Buildings",
        "Pasture Land", "Permanent Crop Land", "Residential Buildings", "River", "Sea or Lake"]),
    "UCF101": (101, 51, 50, lambda names, d: names[0] == "Apply_Eye_Makeup"
               and names == sorted(os.listdir(os.path.join(d, "UCF-101-midframes")), key=names.index)),
    "ImageNet": (1000, 500, 500, lambda names, d: names[657] == names[744] == "missile"
                 and names[836] == names[837] == "sunglasses"
                 and names == [line.split(" ", 1)[1] for line in _lines(os.path.join(d, "classnames.txt"))]),
    "ImageNetV2": (1000, 500, 500, lambda names, d: names[657] == "missile"
                   and names == [line.split(" ", 1)[1] for line in _lines(os.path.join(d, "classnames.txt"))]),
    "ImageNetSketch": (1000, 500, 500, lambda names, d: names[0] == "striped cat"),
    "ImageNetA": (200, 100, 100, lambda names, d: names == [
        line.split(" ", 1)[1] for line in _lines(os.path.join(d, "classnames.txt"))[::5]]),
    "ImageNetR": (200, 100, 100, lambda names, d: names == [
        line.split(" ", 1)[1] for line in _lines(os.path.join(d, "classnames.txt"))[::5]]),
}


def test_every_benchmark_dataset_is_registered_with_a_config_key():
    # Other test modules register toy datasets in the same process, so compare against the 15 names.
    registered = set(DATASET_REGISTRY.registered_names())
    assert set(EXPECTED) <= registered
    assert set(EXPECTED) <= set(datasets.DATASET_KEYS)
    assert set(datasets.DATASET_KEYS) <= registered


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reader_counts_and_classnames(fake_root, name):
    classes, n_base, n_new, names_ok = EXPECTED[name]
    dataset = build_dataset(make_cfg(fake_root, name))
    assert dataset.num_classes == classes == len(dataset.classnames) == len(dataset.lab2cname)
    assert len(dataset.base_classnames) == n_base and len(dataset.new_classnames) == n_new
    assert dataset.base_classnames + dataset.new_classnames == dataset.classnames
    assert names_ok(dataset.classnames, dataset.dataset_dir)
    assert len(dataset.train_x) == len(dataset.test) == classes  # one image per class and split
    assert sorted({item.label for item in dataset.test}) == list(range(classes))
    if name.startswith("ImageNet") and name != "ImageNet":
        assert dataset.val is None and dataset.train_x == dataset.test
    elif name == "ImageNet":
        assert dataset.val is dataset.test
    else:
        assert len(dataset.val) == classes
    assert all(os.path.isabs(item.impath) and os.path.isfile(item.impath) for item in dataset.train_x)


def test_reader_folders_match_the_fake_layout():
    for name, (key, folder, _) in LAYOUTS.items():
        assert DATASET_REGISTRY.get(name).dataset_dir == folder
        assert datasets.DATASET_KEYS[name] == key


def test_dataset_configs_name_every_reader():
    config_dir = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "datasets")
    for name, key in datasets.DATASET_KEYS.items():
        cfg = get_cfg_default()
        cfg.merge_from_file(os.path.join(config_dir, f"{key}.yaml"))
        assert cfg.DATASET.NAME == name


def test_classname_fixes():
    assert action_folder("ApplyEyeMakeup") == "Apply_Eye_Makeup"
    assert action_folder("YoYo") == "Yo_Yo"
    assert scene_classname("a/apartment_building/outdoor") == "outdoor apartment_building"
    assert scene_classname("b/bakery/shop") == "shop bakery"
    assert scene_classname("a/abbey") == "abbey"
    assert year_first("AM General Hummer SUV 2000") == "2000 AM General Hummer SUV"


# The .mat annotations of StanfordCars / OxfordFlowers need SciPy (an optional dependency).
needs_scipy = pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="SciPy not installed")
FALLBACK_DATASETS = ["Caltech101", "OxfordPets", pytest.param("StanfordCars", marks=needs_scipy),
                     pytest.param("OxfordFlowers", marks=needs_scipy), "Food101", "SUN397",
                     "DescribableTextures", "EuroSAT", "UCF101"]


@pytest.mark.parametrize("name", FALLBACK_DATASETS)
def test_missing_split_json_is_rebuilt_from_raw_files(tmp_path, name):
    """2/1/2 images per class make the 50/20/30 and 80/20 fallbacks give the same counts."""
    dataset_dir = make_fake_dataset(name, tmp_path, num_classes=4)
    cfg = make_cfg(tmp_path, name)
    from_json = build_dataset(cfg)
    split_file = next(dataset_dir.glob("split_zhou_*.json"))
    split_file.unlink()
    rebuilt = build_dataset(cfg)
    assert split_file.is_file()  # the fallback saves the split it built
    assert rebuilt.classnames == from_json.classnames
    for part in ("train_x", "val", "test"):
        assert len(getattr(rebuilt, part)) == len(getattr(from_json, part))
    all_paths = lambda d: sorted(i.impath for i in d.train_x + d.val + d.test)  # noqa: E731
    assert all_paths(rebuilt) == all_paths(from_json)
    first_json = split_file.read_text()
    split_file.unlink()
    build_dataset(cfg)
    assert split_file.read_text() == first_json  # same seed, same fallback split
