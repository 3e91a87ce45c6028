"""Food101: 101 folders under ``food-101/images`` (class name = folder name, e.g. ``apple_pie``)."""
from dassl.data.datasets import DATASET_REGISTRY

from .coop_reader import CoOpReader
from .folder_split import split_class_folders


@DATASET_REGISTRY.register()
class Food101(CoOpReader):
    dataset_dir = "food-101"
    image_subdir = "images"
    split_file = "split_zhou_Food101.json"

    def build_split(self):
        # The official meta/train.txt and meta/test.txt are not used (as in CoOp).
        return split_class_folders(self.image_dir, self.name)
