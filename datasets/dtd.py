"""DescribableTextures (DTD): 47 texture folders under ``dtd/images``; class name = folder name."""
from dassl.data.datasets import DATASET_REGISTRY

from .coop_reader import CoOpReader
from .folder_split import split_class_folders


@DATASET_REGISTRY.register()
class DescribableTextures(CoOpReader):
    dataset_dir = "dtd"
    image_subdir = "images"
    split_file = "split_zhou_DescribableTextures.json"

    def build_split(self):
        # The official DTD `labels/` partitions are not used (as in CoOp).
        return split_class_folders(self.image_dir, self.name)
