"""OxfordPets: 37 cat and dog breeds; ``oxford_pets/images`` + ``annotations`` + split JSON."""
import os

from dassl.data.datasets import DATASET_REGISTRY

from .coop_reader import CoOpReader
from .layout import read_lines
from .split_files import build_items


@DATASET_REGISTRY.register()
class OxfordPets(CoOpReader):
    dataset_dir = "oxford_pets"
    image_subdir = "images"
    split_file = "split_zhou_OxfordPets.json"

    def build_split(self):
        trainval = self._read_annotation("trainval.txt")
        test = self._read_annotation("test.txt")
        train, val = self.split_trainval(trainval, p_val=0.2)
        return train, val, test

    def _read_annotation(self, filename: str):
        """Lines ``<stem> <class id 1..37> <species> <breed id>``; class name = stem minus its
        trailing ``_<number>``, lower-cased (``Abyssinian_100`` -> ``abyssinian``)."""
        path = os.path.join(self.dataset_dir, "annotations", filename)
        records = []
        for line in read_lines(path, "annotation file", self.name):
            stem, class_id = line.split()[:2]
            classname = "_".join(stem.split("_")[:-1]).lower()
            records.append((os.path.join(self.image_dir, stem + ".jpg"), int(class_id) - 1, classname))
        return build_items(records, path, self.name)
