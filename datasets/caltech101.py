"""Caltech101: ``caltech-101/101_ObjectCategories`` minus the two background/duplicate folders."""
from dassl.data.datasets import DATASET_REGISTRY

from .coop_reader import CoOpReader
from .folder_split import split_class_folders

IGNORED_FOLDERS = ("BACKGROUND_Google", "Faces_easy")
NEW_CLASSNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@DATASET_REGISTRY.register()
class Caltech101(CoOpReader):
    dataset_dir = "caltech-101"
    image_subdir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"

    def build_split(self):
        return split_class_folders(self.image_dir, self.name, ignored=IGNORED_FOLDERS, new_cnames=NEW_CLASSNAMES)
