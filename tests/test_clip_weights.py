"""Weight files: formats, search order, download with SHA256 check, error messages."""
import hashlib
import os
import warnings

import pytest
import torch

import clip
from clip import weights
from clip.random_weights import preset_state_dict, save_torchscript_archive


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any real download attempt fails like an offline machine."""
    def offline(url, destination):
        raise OSError(f"network disabled in tests: {url}")
    monkeypatch.setattr(weights, "_fetch_url", offline)


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
    """Empty cwd, HOME and no CLIP_HOME, so nothing outside tmp_path is found."""
    work = tmp_path / "work"
    home = tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CLIP_HOME", raising=False)
    return work, home


@pytest.fixture(scope="module")
def tiny_sd():
    return preset_state_dict("tiny", seed=5)


def outputs(state_dict):
    model = clip.build_model(state_dict)
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(image, clip.tokenize(["a photo of a dog.", "a cat"]))[0]


def open_clip_model_state(state_dict):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    model = CLIP(32, vision_cfg=CLIPVisionCfg(layers=2, width=64, patch_size=8, image_size=32),
                 text_cfg=CLIPTextCfg(context_length=77, width=64, heads=1, layers=2), quick_gelu=True)
    model.load_state_dict(state_dict)
    return model.state_dict()


def test_all_formats_give_the_same_model(tmp_path, tiny_sd):
    half = {k: v.half() for k, v in tiny_sd.items()}  # official archives store fp16
    expected = outputs(half)
    archive = save_torchscript_archive(tiny_sd, tmp_path / "ViT-T.pt")
    plain = tmp_path / "plain.pt"
    torch.save(half, plain)
    open_clip_ckpt = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "name": "run",
                "state_dict": {"module." + k: v for k, v in open_clip_model_state(half).items()}},
               open_clip_ckpt)
    custom_text = tmp_path / "custom_text.pt"
    from open_clip.model import convert_to_custom_text_state_dict
    torch.save(convert_to_custom_text_state_dict(dict(half)), custom_text)
    from safetensors.torch import save_file
    safetensors_file = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in half.items()}, str(safetensors_file))

    for path in (archive, plain, open_clip_ckpt, custom_text, safetensors_file):
        state = clip.load_state_dict(path)
        assert set(state) == set(tiny_sd), path
        assert torch.equal(outputs(state), expected), path


def test_torchscript_archive_metadata_keys_are_dropped(tmp_path, tiny_sd):
    path = save_torchscript_archive(tiny_sd, tmp_path / "a.pt", metadata=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        raw = torch.jit.load(path).state_dict()
    assert {"input_resolution", "context_length", "vocab_size"} <= set(raw)
    state = clip.load_state_dict(path)
    assert "input_resolution" not in state and state["visual.proj"].dtype == torch.float16


def test_search_order_local_clip_dir_first(isolated_dirs, tiny_sd, tmp_path, monkeypatch):
    work, home = isolated_dirs
    clip_home = tmp_path / "clip_home"
    for folder, seed in ((work / "clip", 1), (clip_home, 2), (home / ".cache" / "clip", 3)):
        folder.mkdir(parents=True)
        torch.save(preset_state_dict("tiny", seed=seed), folder / "ViT-B-16.pt")
    monkeypatch.setenv("CLIP_HOME", str(clip_home))
    assert clip.resolve_weights("ViT-B/16") == os.path.join(str(work), "clip", "ViT-B-16.pt")
    os.remove(work / "clip" / "ViT-B-16.pt")
    assert clip.resolve_weights("ViT-B/16") == os.path.join(str(clip_home), "ViT-B-16.pt")
    monkeypatch.delenv("CLIP_HOME")
    assert clip.resolve_weights("ViT-B/16") == os.path.join(str(home), ".cache", "clip", "ViT-B-16.pt")
    state = clip.load_state_dict("ViT-B/16")
    assert torch.equal(state["visual.proj"], preset_state_dict("tiny", seed=3)["visual.proj"])


def test_model_file_names():
    assert clip.model_filename("ViT-B/16") == "ViT-B-16.pt"
    assert clip.model_filename("ViT-L/14@336px") == "ViT-L-14-336px.pt"
    assert {"ViT-B/16", "ViT-L/14", "ViT-B/32"} <= set(clip.available_models())
    assert weights.MODEL_URLS["ViT-L/14"].split("/")[-2] == \
        "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"


def test_missing_weights_message_lists_locations_and_instructions(isolated_dirs):
    work, home = isolated_dirs
    with pytest.raises(clip.WeightsNotFoundError) as info:
        clip.load_state_dict("ViT-L/14")
    message = str(info.value)
    assert os.path.join(str(work), "clip", "ViT-L-14.pt") in message
    assert os.path.join(str(home), ".cache", "clip", "ViT-L-14.pt") in message
    assert "download failed" in message and "curl" in message
    assert weights.MODEL_URLS["ViT-L/14"] in message and "CLIP_HOME" in message
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(clip.WeightsNotFoundError, match="downloads are disabled"):
        clip.load_state_dict("ViT-L/14", download=False)


def test_missing_path_and_unknown_name(isolated_dirs):
    with pytest.raises(clip.WeightsNotFoundError, match="nowhere/ViT-B-16.pt"):
        clip.load_state_dict("nowhere/ViT-B-16.pt")
    with pytest.raises(clip.WeightsNotFoundError, match="neither an existing file nor one of the known"):
        clip.load_state_dict("ViT-H/99")


def test_unreadable_files_raise_format_error(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(clip.WeightsFormatError, match="garbage.pt"):
        clip.load_state_dict(garbage)
    not_clip = tmp_path / "other.pt"
    torch.save({"linear.weight": torch.zeros(2, 2)}, not_clip)
    with pytest.raises(clip.WeightsFormatError, match="linear.weight"):
        clip.load_state_dict(not_clip)


def fake_release(monkeypatch, payload: bytes, name="ViT-T/8"):
    sha = hashlib.sha256(payload).hexdigest()
    url = f"https://example.invalid/clip/models/{sha}/ViT-T-8.pt"
    monkeypatch.setitem(weights.MODEL_URLS, name, url)
    return url


def test_download_verifies_sha256_and_is_reused(isolated_dirs, tmp_path, tiny_sd, monkeypatch):
    source = tmp_path / "release.pt"
    torch.save(tiny_sd, source)
    payload = source.read_bytes()
    url = fake_release(monkeypatch, payload)
    calls = []

    def fetch(got_url, destination):
        calls.append(got_url)
        with open(destination, "wb") as handle:
            handle.write(payload)

    root = tmp_path / "cache"
    state = clip.load_state_dict("ViT-T/8", download_root=str(root), fetch=fetch)
    assert calls == [url] and (root / "ViT-T-8.pt").read_bytes() == payload
    assert torch.equal(state["visual.proj"], tiny_sd["visual.proj"])
    clip.load_state_dict("ViT-T/8", download_root=str(root), fetch=fetch)
    assert len(calls) == 1  # found in the download root, not fetched again


def test_download_checksum_mismatch(isolated_dirs, tmp_path, monkeypatch):
    fake_release(monkeypatch, b"the real file")
    root = tmp_path / "cache"

    def corrupt(url, destination):
        with open(destination, "wb") as handle:
            handle.write(b"something else")

    with pytest.raises(clip.WeightsChecksumError, match="SHA256"):
        weights.download_weights(weights.MODEL_URLS["ViT-T/8"], str(root), fetch=corrupt)
    assert list(root.iterdir()) == []  # nothing half-written is kept


def test_download_replaces_cached_file_with_wrong_hash(tmp_path, monkeypatch):
    payload = b"right bytes"
    url = fake_release(monkeypatch, payload)
    root = tmp_path / "cache"
    root.mkdir()
    (root / "ViT-T-8.pt").write_bytes(b"stale")

    def fetch(got_url, destination):
        with open(destination, "wb") as handle:
            handle.write(payload)

    with pytest.warns(UserWarning, match="does not match"):
        path = weights.download_weights(url, str(root), fetch=fetch)
    assert open(path, "rb").read() == payload


def test_load_returns_prompted_model_and_preprocess(tmp_path, tiny_sd):
    from PIL import Image

    path = tmp_path / "tiny.pt"
    torch.save(tiny_sd, path)
    details = {"trainer": "IVLP", "vision_depth": 2, "language_depth": 2, "vision_ctx": 2,
               "language_ctx": 2}
    model, preprocess = clip.load(str(path), design_details=details)
    assert "visual.VPT" in model.prompt_parameter_names()
    image = preprocess(Image.new("L", (48, 40), color=128))
    assert image.shape == (3, 32, 32)
    expected = (128 / 255 - torch.tensor(clip.OPENAI_DATASET_MEAN)) / torch.tensor(clip.OPENAI_DATASET_STD)
    assert torch.allclose(image[:, 16, 16], expected, atol=1e-5)
    assert model.encode_image(image[None]).shape == (1, 32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_build_taking_tensors_gives_the_same_model_without_copying(tiny_sd, dtype):
    """``take_tensors=True`` builds the same float32 model bit for bit (fp32 files and the official fp16
    ones); with float32 weights the model's tensors are the dict's own (no second copy in memory)."""
    stored = {k: v.to(dtype) for k, v in tiny_sd.items()}
    design = {"trainer": "IVLP", "vision_depth": 2, "language_depth": 2, "vision_ctx": 2, "language_ctx": 2}
    torch.manual_seed(3)
    copied = clip.build_model(dict(stored), design)
    torch.manual_seed(3)
    taken_from = dict(stored)
    taken = clip.build_model(taken_from, design, take_tensors=True)
    copied_state, taken_state = copied.state_dict(), taken.state_dict()
    assert list(copied_state) == list(taken_state)
    for key, value in copied_state.items():
        other = taken_state[key]
        assert other.dtype == value.dtype == torch.float32 and other.is_contiguous(), key
        assert torch.equal(other, value), key
    assert [(n, type(p), p.requires_grad) for n, p in copied.named_parameters()] == \
        [(n, type(p), p.requires_grad) for n, p in taken.named_parameters()]
    shared = [k for k, v in taken_from.items() if v.data_ptr() == taken_state[k].data_ptr()]
    if dtype == torch.float32:
        assert len(shared) == len(taken_from)  # every weight is the loaded tensor itself
    else:
        assert shared == []  # converted to float32 one tensor at a time
    assert not any(v.data_ptr() == copied_state[k].data_ptr() for k, v in stored.items())
    assert any("VPT" in k for k in taken_state)  # the prompts (absent from the dict) are initialised too
