"""`clip` stands alone: it imports nothing else from this repository and works where nothing else is."""
import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import clip

REPO_ROOT = Path(__file__).resolve().parent.parent
CLIP_DIR = REPO_ROOT / "clip"
# The repository's other top-level packages; `clip` must not depend on any of them.
OTHER_PACKAGES = ("dassl", "datasets", "trainers", "tools", "train")


def imported_top_level_names(path: Path) -> set:
    """Top-level module names a Python file imports (relative imports excluded)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_clip_module_imports_another_repository_package():
    files = sorted(CLIP_DIR.glob("*.py"))
    assert files, f"no Python files found in {CLIP_DIR}"
    offenders = {f.name: sorted(imported_top_level_names(f) & set(OTHER_PACKAGES)) for f in files}
    assert not {name: found for name, found in offenders.items() if found}


def test_weight_errors_are_plain_builtin_subclasses():
    expected = {clip.WeightsNotFoundError: FileNotFoundError, clip.WeightsChecksumError: RuntimeError,
                clip.WeightsFormatError: RuntimeError}
    for error, builtin in expected.items():
        assert error.__bases__ == (builtin,), error
        assert error.__module__ == "clip.errors"
        assert all(base.__module__ in ("builtins", "clip.errors") for base in error.__mro__), error.__mro__


BLOCKED_IMPORT_SCRIPT = textwrap.dedent("""
    import importlib.abc
    import sys

    BLOCKED = set(sys.argv[2].split(","))

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{fullname} is blocked in this test", name=fullname)
            return None

    sys.meta_path.insert(0, Blocker())
    try:
        import dassl  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the import blocker did not block dassl")

    import torch
    import clip
    from clip.random_weights import preset_state_dict

    weights_file = sys.argv[1]
    torch.save(preset_state_dict("tiny", seed=3), weights_file)
    design = {"trainer": "IVLP", "vision_depth": 2, "language_depth": 2, "vision_ctx": 2, "language_ctx": 2}
    model, preprocess = clip.load(weights_file, design_details=design)
    image = torch.randn(2, 3, model.visual.input_resolution, model.visual.input_resolution)
    with torch.no_grad():
        logits, _ = model(image, clip.tokenize(["a photo of a dog.", "a photo of a cat."]))
    assert logits.shape == (2, 2) and bool(torch.isfinite(logits).all()), logits
    try:
        clip.load_state_dict(weights_file + ".missing")
    except clip.WeightsNotFoundError as error:
        assert isinstance(error, FileNotFoundError)
    else:
        raise SystemExit("a missing weights file did not raise WeightsNotFoundError")
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("CLIP-STANDALONE-OK", tuple(logits.shape), sorted(model.prompt_parameter_names())[0])
""")


def test_clip_builds_and_runs_with_the_rest_of_the_repository_unimportable(tmp_path):
    script = tmp_path / "use_clip.py"
    script.write_text(BLOCKED_IMPORT_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "tiny.pt"), ",".join(OTHER_PACKAGES)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CLIP-STANDALONE-OK (2, 2) transformer.resblocks.1.VPT_shallow" in result.stdout
