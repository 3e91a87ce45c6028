"""StanfordCars: 196 car models; split JSON paths are relative to ``stanford_cars/`` itself."""
import os

from dassl.data.datasets import DATASET_REGISTRY

from .coop_reader import CoOpReader
from .mat_files import load_mat
from .split_files import build_items


def year_first(name: str) -> str:
    """``AM General Hummer SUV 2000`` -> ``2000 AM General Hummer SUV`` (CoOp's class names)."""
    words = name.split(" ")
    return " ".join([words[-1]] + words[:-1])


@DATASET_REGISTRY.register()
class StanfordCars(CoOpReader):
    dataset_dir = "stanford_cars"
    split_file = "split_zhou_StanfordCars.json"
    split_paths_from_dataset_dir = True

    def build_split(self):
        meta = load_mat(os.path.join(self.dataset_dir, "devkit", "cars_meta.mat"), "class meta file", self.name)
        classnames = [year_first(str(entry[0])) for entry in meta["class_names"][0]]
        trainval = self._read_annotations(os.path.join("devkit", "cars_train_annos.mat"), "cars_train", classnames)
        test = self._read_annotations("cars_test_annos_withlabels.mat", "cars_test", classnames)
        train, val = self.split_trainval(trainval, p_val=0.2)
        return train, val, test

    def _read_annotations(self, rel_mat: str, image_folder: str, classnames: list):
        """Each annotation has ``fname`` and a 1-based ``class``."""
        path = os.path.join(self.dataset_dir, rel_mat)
        records = []
        for anno in load_mat(path, "annotation file", self.name)["annotations"][0]:
            label = int(anno["class"].item()) - 1
            fname = str(anno["fname"].item())
            records.append((os.path.join(self.dataset_dir, image_folder, fname), label, classnames[label]))
        return build_items(records, path, self.name)
