"""Configuration: the default tree and source-aware merging (yacs semantics)."""
from dassl.config.defaults import get_cfg_default  # noqa: F401
from dassl.config.merge import (  # noqa: F401
    ConfigError,
    SourcedCfgNode,
    load_yaml,
    merge_flags,
    merge_mapping,
    merge_opts,
    merge_sources,
    merge_yaml,
)
