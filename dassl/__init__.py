"""Dassl-compatible training engine for prompt-learning codebases (CoOp, PromptSRC, PromptKD).

Importing the bare package is cheap on purpose: sub-packages (config, data, engine, ...) are imported
only when asked for, so `import dassl` never pulls in torch or dataset code.
"""

__version__ = "0.1.0"

# The Dassl.pytorch release whose public API this package mirrors.
DASSL_COMPAT_VERSION = "0.6.3"
