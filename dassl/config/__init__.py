"""Configuration: the default tree, source-aware merging (yacs semantics) and the config identity."""
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
from dassl.config.identity import (  # noqa: F401
    RUN_SPECIFIC_KEYS,
    config_hash,
    config_items,
    describe_differences,
    differing_keys,
)
