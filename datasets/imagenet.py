"""ImageNet: ``imagenet/images/{train,val}/<wnid>/...`` + ``classnames.txt`` (CLIP's class names).

The val images are the test set and also the validation set (as in CoOp).
Decisions: (1) original Dassl caches the listing as ``preprocessed.pkl``; we never read pickles
(unsafe and not portable) and simply list the folders, which is fast. (2) File names are sorted
within each class folder (CoOp used ``os.listdir`` order), so the same seed picks the same
few-shot images on every machine. (3) PromptKD's debug prints are not reproduced.
"""
import os
from collections import OrderedDict
from typing import Dict, List

from dassl.data.datasets import DATASET_REGISTRY, Datum
from dassl.utils import UserError

from .coop_reader import CoOpReader
from .layout import doc_hint, read_lines, require_dir, sorted_files, sorted_subdirs


def read_classnames(path: str, dataset_name: str) -> Dict[str, str]:
    """``classnames.txt`` lines ``<wnid> <class name with spaces>`` -> ordered {wnid: name}."""
    classnames: Dict[str, str] = OrderedDict()
    for line in read_lines(path, "class-name file", dataset_name):
        wnid, _, name = line.strip().partition(" ")
        classnames[wnid] = name
    return classnames


def read_wnid_folders(image_dir: str, classnames: Dict[str, str], dataset_name: str) -> List[Datum]:
    """Sorted wnid sub-folders of `image_dir` -> labels 0..; class names looked up by wnid."""
    require_dir(image_dir, "image folder", dataset_name)
    items = []
    for label, wnid in enumerate(sorted_subdirs(image_dir)):
        if wnid not in classnames:
            raise UserError(f"{dataset_name}: folder {os.path.join(image_dir, wnid)} is not listed in "
                            "classnames.txt. " + doc_hint(dataset_name))
        folder = os.path.join(image_dir, wnid)
        items.extend(Datum(impath=os.path.join(folder, name), label=label, classname=classnames[wnid])
                     for name in sorted_files(folder))
    return items


@DATASET_REGISTRY.register()
class ImageNet(CoOpReader):
    dataset_dir = "imagenet"
    image_subdir = "images"
    val_is_test = True

    def build_split(self):
        if os.path.isfile(os.path.join(self.dataset_dir, "preprocessed.pkl")):
            print("Ignoring preprocessed.pkl (original Dassl's pickle cache); listing the image folders instead")
        classnames = read_classnames(os.path.join(self.dataset_dir, "classnames.txt"), self.name)
        train = read_wnid_folders(os.path.join(self.image_dir, "train"), classnames, self.name)
        test = read_wnid_folders(os.path.join(self.image_dir, "val"), classnames, self.name)
        return train, None, test
