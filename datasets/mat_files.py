"""Reading MATLAB ``.mat`` annotation files (only the StanfordCars / OxfordFlowers fallbacks need
them). SciPy is imported lazily: with the split JSON present it is never needed."""
from dassl.utils import UserError

from .layout import require_file


def load_mat(path: str, what: str, dataset_name: str) -> dict:
    require_file(path, what, dataset_name)
    try:
        from scipy.io import loadmat
    except ImportError:
        raise UserError(f"{dataset_name}: rebuilding the split from {path} needs SciPy (pip install scipy); "
                        "alternatively place the split JSON file in the dataset folder (see DATASETS.md).") from None
    return loadmat(path)
