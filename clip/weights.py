"""Finding, downloading and reading CLIP weight files.

``load_state_dict(name_or_path)`` returns an OpenAI-layout state dict from:

* an explicit file path;
* a model name (``"ViT-B/16"``), looked up as ``./clip/<file>`` (PromptKD's
  convention), ``$CLIP_HOME/<file>`` and ``~/.cache/clip/<file>`` (OpenAI's
  download root), and downloaded with its SHA256 check when none exists.

Readable formats: the official TorchScript archives, plain ``torch.save``
state dicts, open_clip checkpoints (``{"state_dict": {"module.…"}}``, the
``text.``-prefixed custom-text layout) and ``.safetensors`` files.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
import warnings
import zipfile
from typing import Callable, Dict, List, Mapping, Optional, Union

import torch

from .errors import WeightsChecksumError, WeightsFormatError, WeightsNotFoundError

_URL_ROOT = "https://openaipublic.azureedge.net/clip/models"
MODEL_URLS: Dict[str, str] = {
    "RN50": f"{_URL_ROOT}/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": f"{_URL_ROOT}/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": f"{_URL_ROOT}/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": f"{_URL_ROOT}/52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": f"{_URL_ROOT}/be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": f"{_URL_ROOT}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": f"{_URL_ROOT}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": f"{_URL_ROOT}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": f"{_URL_ROOT}/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}
_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
_OPEN_CLIP_TEXT_KEYS = ("transformer.", "token_embedding.", "positional_embedding",
                        "ln_final.", "text_projection")

Fetcher = Callable[[str, str], None]


def available_models() -> List[str]:
    """Names of the official OpenAI CLIP models (ResNet ones are listed but cannot be built)."""
    return list(MODEL_URLS)


def model_filename(name: str) -> str:
    """File name of a model: ``"ViT-B/16"`` -> ``"ViT-B-16.pt"``, ``"ViT-L/14@336px"`` -> ``"ViT-L-14-336px.pt"``."""
    return os.path.basename(MODEL_URLS[name])


def expected_sha256(url: str) -> str:
    """The SHA256 published in an OpenAI URL (its second-to-last path segment)."""
    return url.split("/")[-2]


def default_download_root() -> str:
    """``$CLIP_HOME`` when set, else ``~/.cache/clip``."""
    return os.environ.get("CLIP_HOME") or os.path.expanduser("~/.cache/clip")


def search_dirs() -> List[str]:
    """Folders searched for a model file, in order: ./clip, $CLIP_HOME, ~/.cache/clip."""
    dirs = [os.path.join(os.getcwd(), "clip")]
    if os.environ.get("CLIP_HOME"):
        dirs.append(os.environ["CLIP_HOME"])
    dirs.append(os.path.expanduser("~/.cache/clip"))
    unique: List[str] = []
    for d in dirs:
        if os.path.abspath(d) not in [os.path.abspath(u) for u in unique]:
            unique.append(d)
    return unique


def file_sha256(path: Union[str, os.PathLike], chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_url(url: str, destination: str) -> None:
    """Stream ``url`` into ``destination`` with a progress bar."""
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=30) as source, open(destination, "wb") as output:
        total = int(source.headers.get("Content-Length") or 0)
        with tqdm(total=total or None, unit="iB", unit_scale=True, unit_divisor=1024,
                  desc=os.path.basename(url)) as bar:
            for chunk in iter(lambda: source.read(1 << 16), b""):
                output.write(chunk)
                bar.update(len(chunk))


def download_weights(url: str, root: Optional[str] = None, fetch: Optional[Fetcher] = None) -> str:
    """Download ``url`` into ``root`` (default ``$CLIP_HOME`` or ``~/.cache/clip``) and verify it.

    An existing file with the right SHA256 is reused; a wrong one is fetched
    again; a mismatch after the download raises :class:`WeightsChecksumError`.
    The file is written under a temporary name and renamed when complete.
    ``fetch(url, destination)`` is injectable (tests never touch the network).
    """
    root = root or default_download_root()
    os.makedirs(root, exist_ok=True)
    target = os.path.join(root, os.path.basename(url))
    sha = expected_sha256(url)
    if os.path.isfile(target):
        if file_sha256(target) == sha:
            return target
        warnings.warn(f"{target} exists but its SHA256 does not match {sha}; downloading it again")
    fetch = fetch or _fetch_url
    handle, partial = tempfile.mkstemp(prefix=os.path.basename(target) + ".", suffix=".part", dir=root)
    os.close(handle)
    try:
        fetch(url, partial)
        actual = file_sha256(partial)
        if actual != sha:
            raise WeightsChecksumError(
                f"downloaded {url} but its SHA256 is {actual}, expected {sha}; "
                f"the download is corrupt or the URL serves another file (nothing was kept)")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


def _is_torchscript_archive(path: str) -> bool:
    """TorchScript zips hold a ``code/`` folder and ``constants.pkl``; torch.save zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def _read_raw(path: str):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path, device="cpu")
    if _is_torchscript_archive(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(path, map_location="cpu")
        return module.state_dict()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsFormatError(
            f"cannot read CLIP weights from {path}: {type(error).__name__}: {error}. Expected an "
            f"official OpenAI .pt archive, a torch.save'd state dict, an open_clip checkpoint or a "
            f".safetensors file") from error


def normalize_state_dict(raw: Mapping, source: str = "<state dict>") -> Dict[str, torch.Tensor]:
    """Bring a loaded checkpoint to the OpenAI layout.

    Unwraps ``{"state_dict": …}`` / ``{"model": …}``, strips ``module.``
    prefixes (DataParallel / open_clip training), maps open_clip's custom-text
    layout (``text.transformer.…`` -> ``transformer.…``) and drops the scalar
    metadata entries of the official archives.
    """
    state = raw
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not state:
        raise WeightsFormatError(f"{source} does not contain a state dict (got {type(raw).__name__})")
    result: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsFormatError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith("text.") and key[len("text."):].startswith(_OPEN_CLIP_TEXT_KEYS):
            key = key[len("text."):]
        if key in _METADATA_KEYS or key == "attn_mask":
            continue
        result[key] = value
    if "visual.proj" not in result and not any(k.startswith("visual.layer1.") for k in result):
        sample = ", ".join(list(result)[:5])
        raise WeightsFormatError(
            f"{source} is not an OpenAI-layout CLIP ViT state dict (no 'visual.proj'; first keys: {sample})")
    return result


def read_weights_file(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Read any supported weights file into an OpenAI-layout state dict (tensors as stored)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"CLIP weights file not found: {path}")
    return normalize_state_dict(_read_raw(path), source=path)


def resolve_weights(name_or_path: Union[str, os.PathLike], *, download: bool = True,
                    download_root: Optional[str] = None,
                    fetch: Optional[Fetcher] = None) -> str:
    """Path of the weights file for a model name or a path (downloading if allowed)."""
    name = os.fspath(name_or_path)
    expanded = os.path.expanduser(name)
    if os.path.isfile(expanded):
        return expanded
    if name not in MODEL_URLS:
        raise WeightsNotFoundError(
            f"CLIP weights file not found: {os.path.abspath(expanded)} ({name!r} is neither an "
            f"existing file nor one of the known models {available_models()})")
    filename = model_filename(name)
    dirs = search_dirs()
    if download_root:
        dirs.insert(0, download_root)
    looked = [os.path.join(d, filename) for d in dirs]
    for candidate in looked:
        if os.path.isfile(candidate):
            return candidate
    url = MODEL_URLS[name]
    reason = "downloads are disabled"
    if download:
        try:
            return download_weights(url, download_root or default_download_root(), fetch=fetch)
        except WeightsChecksumError:
            raise
        except OSError as error:  # offline, DNS failure, HTTP error, unwritable folder
            reason = f"the download failed ({type(error).__name__}: {error})"
    looked_lines = "\n".join(f"  - {p}" for p in looked)
    raise WeightsNotFoundError(
        f"CLIP weights for {name} not found; looked in:\n{looked_lines}\nand {reason}.\n"
        f"Get the file with:\n  mkdir -p clip && curl -L -o clip/{filename} {url}\n"
        f"(SHA256 {expected_sha256(url)}), or set CLIP_HOME to the folder that holds it, "
        f"or pass the file path instead of the model name.")


def load_state_dict(name_or_path: Union[str, os.PathLike], *, download: bool = True,
                    download_root: Optional[str] = None,
                    fetch: Optional[Fetcher] = None) -> Dict[str, torch.Tensor]:
    """OpenAI-layout state dict for a model name or weights file (see module docstring)."""
    path = resolve_weights(name_or_path, download=download, download_root=download_root, fetch=fetch)
    return read_weights_file(path)
