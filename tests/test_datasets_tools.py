"""tools/make_fake_dataset.py: names, CLI, layout details."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.make_fake_dataset import LAYOUTS, main, make_fake_dataset, resolve_name


def test_resolve_registered_name_or_config_key():
    assert resolve_name("oxford_pets") == "OxfordPets" == resolve_name("OxfordPets")
    assert resolve_name("dtd") == "DescribableTextures"
    with pytest.raises(ValueError, match="Unknown dataset 'pets'"):
        resolve_name("pets")


def test_num_classes_and_counts(tmp_path):
    dataset_dir = make_fake_dataset("oxford_pets", tmp_path, num_classes=40, train_per_class=3,
                                    val_per_class=2, test_per_class=1)
    assert dataset_dir == tmp_path / "oxford_pets"
    split = json.loads((dataset_dir / "split_zhou_OxfordPets.json").read_text())
    assert len({e[1] for e in split["train"]}) == 40
    assert [len(split[k]) for k in ("train", "val", "test")] == [120, 80, 40]
    assert len(list((dataset_dir / "images").iterdir())) == 240
    assert len((dataset_dir / "annotations" / "trainval.txt").read_text().splitlines()) == 200


def test_stanford_cars_paths_are_relative_to_the_dataset_folder(tmp_path):
    dataset_dir = make_fake_dataset("StanfordCars", tmp_path, num_classes=2)
    split = json.loads((dataset_dir / "split_zhou_StanfordCars.json").read_text())
    assert split["train"][0][0] == "cars_train/00001.jpg" and split["test"][0][0].startswith("cars_test/")
    assert (dataset_dir / split["train"][0][0]).is_file()


def test_cli_writes_a_dataset(tmp_path, capsys):
    assert main(["eurosat", "--root", str(tmp_path), "--num-classes", "3"]) == 0
    assert "Wrote fake EuroSAT" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "eurosat" / "2750").iterdir()) == ["AnnualCrop", "Forest",
                                                                                 "HerbaceousVegetation"]
    assert main(["nope", "--root", str(tmp_path)]) == 2


def test_cli_runs_as_a_script(tmp_path):
    script = Path(__file__).resolve().parents[1] / "tools" / "make_fake_dataset.py"
    result = subprocess.run([sys.executable, str(script), "DescribableTextures", "--root", str(tmp_path),
                             "--num-classes", "2"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "dtd" / "split_zhou_DescribableTextures.json").is_file()
    assert set(LAYOUTS) == {"ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101",
                            "FGVCAircraft", "SUN397", "DescribableTextures", "EuroSAT", "UCF101", "ImageNetV2",
                            "ImageNetSketch", "ImageNetA", "ImageNetR"}
