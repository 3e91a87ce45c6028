"""Packaging: installs the engine (``dassl``) and the prompt-aware CLIP (``clip``).

``datasets/`` and ``trainers/`` are run-from-the-repository-root modules (as in CoOp): they are
not installed, because a top-level ``datasets`` package would shadow Hugging Face's ``datasets``.
"""
from setuptools import find_packages, setup


def read_readme() -> str:
    try:
        with open("README.md", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


setup(
    name="ame-distill",
    version="0.1.0",
    description="AME entropy regulariser for PromptKD-style CLIP prompt distillation, "
    "on a Dassl-compatible engine that runs on current PyTorch",
    long_description=read_readme(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["dassl", "dassl.*", "clip", "clip.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "yacs>=0.1.8",
        "open_clip_torch>=2.20",
        "tqdm",
        "numpy",
        "Pillow",
        "PyYAML",
    ],
    extras_require={
        "test": ["pytest"],
        # tools/analyze.py and tools/plot_shots.py (t-SNE, F-scores, separability, figures)
        "analysis": ["scikit-learn>=1.0", "matplotlib>=3.3"],
    },
    license="MIT",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
