"""The four test-only ImageNet variants. Each folder holds a copy of ImageNet's ``classnames.txt``.

As in CoOp they have no val split and ignore ``NUM_SHOTS``; ``train_x = test = all images``.
``SUBSAMPLE_CLASSES`` and the protocols apply as for every other reader (``cross``: val = test).
ImageNetA / ImageNetR keep their own 200-class label space (sorted wnid folders).
"""
import os

from dassl.data.datasets import DATASET_REGISTRY, Datum

from .coop_reader import CoOpReader
from .imagenet import read_classnames, read_wnid_folders
from .layout import sorted_files, sorted_subdirs


class ImageNetVariant(CoOpReader):
    """Reads ``<dataset_dir>/classnames.txt`` and the image folder; returns ``(data, None, data)``."""

    uses_few_shot = False

    def build_split(self):
        classnames = read_classnames(os.path.join(self.dataset_dir, "classnames.txt"), self.name)
        data = self.read_data(classnames)
        return data, None, data

    def read_data(self, classnames):
        return read_wnid_folders(self.image_dir, classnames, self.name)


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetVariant):
    """Folders ``0`` .. ``999`` named by class index; names from ``classnames.txt`` in file order."""

    dataset_dir = "imagenetv2"
    image_subdir = "imagenetv2-matched-frequency-format-val"

    def read_data(self, classnames):
        names = list(classnames.values())
        folders = sorted((f for f in sorted_subdirs(self.image_dir) if f.isdigit()), key=int)
        items = []
        for folder in folders:
            label = int(folder)
            path = os.path.join(self.image_dir, folder)
            items.extend(Datum(impath=os.path.join(path, name), label=label, classname=names[label])
                         for name in sorted_files(path))
        return items


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetVariant):
    dataset_dir = "imagenet-sketch"
    image_subdir = "images"


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetVariant):
    dataset_dir = "imagenet-adversarial"
    image_subdir = "imagenet-a"


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetVariant):
    dataset_dir = "imagenet-rendition"
    image_subdir = "imagenet-r"
