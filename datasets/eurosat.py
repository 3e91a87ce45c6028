"""EuroSAT (RGB): 10 land-cover folders under ``eurosat/2750``, renamed to descriptive class names.

CoOp's reader also carries an unused method that refers to an undefined name; it is not reproduced.
"""
from dassl.data.datasets import DATASET_REGISTRY

from .coop_reader import CoOpReader
from .folder_split import split_class_folders

NEW_CLASSNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASET_REGISTRY.register()
class EuroSAT(CoOpReader):
    dataset_dir = "eurosat"
    image_subdir = "2750"
    split_file = "split_zhou_EuroSAT.json"

    def build_split(self):
        return split_class_folders(self.image_dir, self.name, new_cnames=NEW_CLASSNAMES)
