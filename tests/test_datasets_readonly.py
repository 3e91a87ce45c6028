"""Read-only dataset roots: nothing is written into the dataset tree, derived files go to the cache
folder (DATASET.FEWSHOT_CACHE_DIR, $AME_FEWSHOT_CACHE, else the user cache), and the picks are the
same as with a writable root.

Tests run as root here, where chmod does not stop writes; the read-only case is then simulated by
making the writability check say "no" for the dataset tree, and a snapshot of the tree proves that
nothing was written. One test uses a real chmod and is skipped when running as root.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat

import pytest

from datasets import cache_location, split_files  # importing the package registers the readers
from dassl.config import get_cfg_default
from dassl.data.datasets import build_dataset
from dassl.utils import UserError
from tools.make_fake_dataset import make_fake_dataset

FEWSHOT = os.path.join("split_fewshot", "shot_2-seed_1.json")
PROTOCOLS = [None, "base2novel", "cross"]


@pytest.fixture(autouse=True)
def isolated_cache(monkeypatch, tmp_path):
    """No cache folder from the environment; the user cache folder lives in tmp_path."""
    monkeypatch.delenv(cache_location.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "ame" / "fewshot"


def make_cfg(root, name, *opts):
    cfg = get_cfg_default()
    cfg.merge_from_list(["DATASET.ROOT", str(root), "DATASET.NAME", name, "SEED", 1, *opts])
    return cfg


def read(root, name="OxfordPets", protocol=None, *opts):
    return build_dataset(make_cfg(root, name, "DATASET.NUM_SHOTS", 2, *opts), protocol=protocol)


def snapshot(tree):
    """Every path under `tree` with its content (files) and mode, to prove nothing changed."""
    out = {}
    for folder, dirs, files in os.walk(tree):
        for name in dirs + files:
            path = os.path.join(folder, name)
            content = open(path, "rb").read() if name in files else None
            out[os.path.relpath(path, tree)] = (content, os.stat(path).st_mode)
    return out


def mark_read_only(monkeypatch, tree):
    """Make the writability check answer "no" for everything under `tree` (a simulated read-only mount)."""
    real = cache_location.is_writable_dir
    prefix = str(tree)

    def writable(path):
        path = os.path.abspath(path)
        return not (path == prefix or path.startswith(prefix + os.sep)) and real(path)

    monkeypatch.setattr(cache_location, "is_writable_dir", writable)


def shadow(cache_base, dataset_dir):
    real = os.path.realpath(dataset_dir)
    return cache_base / f"{os.path.basename(real)}-{hashlib.sha256(real.encode()).hexdigest()[:10]}"


def picks(dataset, dataset_dir):
    """Relative paths and labels of every split: what a run trains and tests on."""
    return {part: [(os.path.relpath(i.impath, dataset_dir), i.label, i.classname) for i in getattr(dataset, part)]
            for part in ("train_x", "val", "test")}


def two_copies(tmp_path, name, **kwargs):
    """The same fake dataset under a writable and a (to be) read-only root."""
    rw = make_fake_dataset(name, tmp_path / "rw", **kwargs)
    ro = make_fake_dataset(name, tmp_path / "ro", **kwargs)
    return rw, ro


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_read_only_root_writes_nothing_and_picks_as_a_writable_root(tmp_path, monkeypatch, isolated_cache,
                                                                     protocol, capsys):
    rw, ro = two_copies(tmp_path, "OxfordPets", num_classes=4, train_per_class=5, val_per_class=3)
    writable = read(rw.parent, protocol=protocol)
    assert (rw / FEWSHOT).is_file()  # a writable dataset folder keeps the cache (CoOp's place)

    mark_read_only(monkeypatch, ro)
    before = snapshot(ro)
    capsys.readouterr()
    read_only = read(ro.parent, protocol=protocol)
    assert snapshot(ro) == before
    cached = shadow(isolated_cache, ro) / FEWSHOT
    assert cached.is_file()
    out = capsys.readouterr().out
    assert f"dataset folder {ro} is not writable" in out and str(shadow(isolated_cache, ro)) in out
    assert cached.read_bytes() == (rw / FEWSHOT).read_bytes()
    assert picks(read_only, ro) == picks(writable, rw)

    again = read(ro.parent, protocol=protocol)  # the second run reads the cache folder's sample
    assert f"Loading preprocessed few-shot data from {cached}" in capsys.readouterr().out
    assert picks(again, ro) == picks(writable, rw)
    assert snapshot(ro) == before


def test_missing_split_is_rebuilt_loudly_and_kept_outside_a_read_only_tree(tmp_path, monkeypatch,
                                                                          isolated_cache, capsys):
    rw, ro = two_copies(tmp_path, "DescribableTextures", num_classes=3, train_per_class=3, val_per_class=2,
                        test_per_class=2)
    split = "split_zhou_DescribableTextures.json"
    for folder in (rw, ro):
        (folder / split).unlink()
    writable = read(rw.parent, "DescribableTextures", "base2novel")

    mark_read_only(monkeypatch, ro)
    before = snapshot(ro)
    capsys.readouterr()
    first = read(ro.parent, "DescribableTextures", "base2novel")
    out = capsys.readouterr().out
    warning = [line for line in out.splitlines() if line.startswith("Warning: DescribableTextures: split file")]
    assert len(warning) == 1
    assert str(ro / split) in warning[0] and "may differ from the published split" in warning[0]
    assert snapshot(ro) == before
    rebuilt = shadow(isolated_cache, ro) / split
    assert rebuilt.read_bytes() == (rw / split).read_bytes()
    assert picks(first, ro) == picks(writable, rw)

    # A later run with another seed reads the saved split (not a new random one) and says where from.
    full_split = picks(build_dataset(make_cfg(ro.parent, "DescribableTextures", "SEED", 7)), ro)
    out = capsys.readouterr().out
    assert f"reading the split this code rebuilt from the raw files, {rebuilt}" in out
    assert full_split == picks(build_dataset(make_cfg(rw.parent, "DescribableTextures", "SEED", 7)), rw)
    assert snapshot(ro) == before


def test_configured_cache_dir_gets_new_files_and_key_beats_env(tmp_path, monkeypatch, isolated_cache):
    dataset_dir = make_fake_dataset("OxfordPets", tmp_path / "data", num_classes=3, train_per_class=4)
    before = snapshot(dataset_dir)
    from_env, from_key = tmp_path / "env_cache", tmp_path / "key_cache"
    monkeypatch.setenv(cache_location.ENV_VAR, str(from_env))
    read(dataset_dir.parent, "OxfordPets", "cross")
    assert (shadow(from_env, dataset_dir) / FEWSHOT).is_file()
    assert snapshot(dataset_dir) == before  # a configured place means: never write into the dataset

    read(dataset_dir.parent, "OxfordPets", None, "DATASET.FEWSHOT_CACHE_DIR", str(from_key), "DATASET.NUM_SHOTS", 3)
    assert (shadow(from_key, dataset_dir) / "split_fewshot" / "shot_3-seed_1.json").is_file()
    assert not (shadow(from_env, dataset_dir) / "split_fewshot" / "shot_3-seed_1.json").exists()
    assert snapshot(dataset_dir) == before and not isolated_cache.exists()


def test_a_cache_in_the_dataset_folder_is_still_read(tmp_path, monkeypatch):
    dataset_dir = make_fake_dataset("OxfordPets", tmp_path / "data", num_classes=3, train_per_class=4)
    read(dataset_dir.parent)
    cache = dataset_dir / FEWSHOT
    content = json.loads(cache.read_text())
    content["train"] = content["train"][:2]
    cache.write_text(json.dumps(content))
    elsewhere = tmp_path / "elsewhere"
    mark_read_only(monkeypatch, dataset_dir)
    dataset = read(dataset_dir.parent, "OxfordPets", "base2novel", "DATASET.FEWSHOT_CACHE_DIR", str(elsewhere))
    assert len(dataset.train_x) == 2
    assert not elsewhere.exists()


def test_write_refused_despite_the_check_falls_back_to_the_cache(tmp_path, monkeypatch, isolated_cache, capsys):
    """E.g. NFS with root squash: the permission check says yes, the write says no."""
    rw, ro = two_copies(tmp_path, "OxfordPets", num_classes=3, train_per_class=4)
    writable = read(rw.parent)
    real_write = split_files.write_json

    def write_json(obj, path):
        if str(path).startswith(str(ro) + os.sep):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real_write(obj, path)

    monkeypatch.setattr(split_files, "write_json", write_json)
    before = snapshot(ro)
    capsys.readouterr()
    dataset = read(ro.parent)
    assert "is not writable" in capsys.readouterr().out
    assert snapshot(ro) == before
    assert (shadow(isolated_cache, ro) / FEWSHOT).read_bytes() == (rw / FEWSHOT).read_bytes()
    assert picks(dataset, ro) == picks(writable, rw)


def test_unwritable_cache_dir_is_one_user_error(tmp_path):
    dataset_dir = make_fake_dataset("OxfordPets", tmp_path / "data", num_classes=3)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match=r"OxfordPets: cannot write .*a_file.*DATASET\.FEWSHOT_CACHE_DIR chose; "
                                        r"set DATASET\.FEWSHOT_CACHE_DIR \(or \$AME_FEWSHOT_CACHE\)"):
        read(dataset_dir.parent, "OxfordPets", None, "DATASET.FEWSHOT_CACHE_DIR", str(blocker / "cache"))


def test_is_writable_dir_walks_up_to_the_nearest_existing_folder(tmp_path):
    assert cache_location.is_writable_dir(str(tmp_path / "not" / "yet"))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert not cache_location.is_writable_dir(str(blocker / "below"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits; covered by the simulated tests")
def test_real_read_only_tree(tmp_path, isolated_cache):
    rw, ro = two_copies(tmp_path, "DescribableTextures", num_classes=3, train_per_class=3, val_per_class=2)
    for folder in (rw, ro):
        (folder / "split_zhou_DescribableTextures.json").unlink()
    writable = read(rw.parent, "DescribableTextures", "cross")
    folders = [ro] + [p for p in ro.rglob("*") if p.is_dir()]
    for folder in folders:
        folder.chmod(folder.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        before = snapshot(ro)
        dataset = read(ro.parent, "DescribableTextures", "cross")
        assert snapshot(ro) == before
        assert (shadow(isolated_cache, ro) / FEWSHOT).is_file()
        assert picks(dataset, ro) == picks(writable, rw)
    finally:
        for folder in folders:
            folder.chmod(folder.stat().st_mode | stat.S_IWUSR)
