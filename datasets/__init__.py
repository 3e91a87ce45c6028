"""Dataset readers; importing this package registers every dataset in DATASET_REGISTRY."""
