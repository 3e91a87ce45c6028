"""Dataset registry and the base classes every reader builds on."""
from .base_dataset import DatasetBase, Datum, MissingImageError, load_datum_pickle, num_base_classes
from .build import DATASET_REGISTRY, build_dataset

__all__ = ["DATASET_REGISTRY", "build_dataset", "Datum", "DatasetBase", "MissingImageError", "load_datum_pickle",
           "num_base_classes"]
