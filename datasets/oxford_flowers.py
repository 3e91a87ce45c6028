"""OxfordFlowers (102 categories): ``oxford_flowers/jpg`` + ``imagelabels.mat`` + ``cat_to_name.json``."""
import os
from collections import defaultdict

from dassl.data.datasets import DATASET_REGISTRY
from dassl.utils import read_json

from .coop_reader import CoOpReader
from .folder_split import split_items_by_ratio
from .layout import check_files_exist, require_file
from .mat_files import load_mat


@DATASET_REGISTRY.register()
class OxfordFlowers(CoOpReader):
    dataset_dir = "oxford_flowers"
    image_subdir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"

    def build_split(self):
        """Per label (1..102, first-appearance order): shuffle, 50% / 20% / rest; the official
        ``setid.mat`` split is not used (as in CoOp)."""
        names_file = require_file(os.path.join(self.dataset_dir, "cat_to_name.json"), "class-name file", self.name)
        cat_to_name = read_json(names_file)
        label_file = os.path.join(self.dataset_dir, "imagelabels.mat")
        labels = load_mat(label_file, "label file", self.name)["labels"][0]
        images_of = defaultdict(list)
        for index, label in enumerate(labels):
            images_of[int(label)].append(os.path.join(self.image_dir, f"image_{index + 1:05d}.jpg"))
        check_files_exist([p for paths in images_of.values() for p in paths], label_file, self.name)

        print("Splitting into 50% train, 20% val, and 30% test")
        train, val, test = [], [], []
        for label, paths in images_of.items():
            parts = split_items_by_ratio(paths, label - 1, cat_to_name[str(label)], 0.5, 0.2,
                                         f"class {label} of {label_file}", self.name)
            for bucket, part in zip((train, val, test), parts):
                bucket.extend(part)
        return train, val, test
