"""Merging YAML files, command-line flags and ``KEY VALUE`` opts into a config, with clear errors.

Semantics follow yacs 0.1.8 (values pass through ``ast.literal_eval`` when possible; a value must
have the default's type, with list <-> tuple as the only coercion; int vs float is an error), but
every error names the key *and where the value came from* (a YAML path, a flag, or
"command-line opts") and is a ``ConfigError`` (a ``UserError``), so ``train.py`` can print one line.
"""
from __future__ import annotations

import difflib
import os.path as osp
from ast import literal_eval
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

import yaml
from yacs.config import CfgNode

from dassl.utils.tools import UserError

__all__ = [
    "ConfigError",
    "SourcedCfgNode",
    "load_yaml",
    "merge_mapping",
    "merge_yaml",
    "merge_opts",
    "merge_flags",
    "merge_sources",
]

_SCALAR_TYPES = (tuple, list, str, int, float, bool, type(None))


class ConfigError(UserError, ValueError):
    """A config source (YAML file, flag, opts) has an unknown key or a badly typed value."""


def load_yaml(path: str) -> dict:
    """Read a YAML config file into a dict; a missing or malformed file raises ``ConfigError``."""
    if not osp.isfile(path):
        raise ConfigError(f'Config file not found: "{path}"')
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f'Cannot parse config file "{path}": {exc}') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'Config file "{path}" must hold a mapping of keys, not {type(data).__name__}')
    return data


def _decode(value: Any) -> Any:
    """yacs' value decoding: strings that are Python literals become those literals."""
    if not isinstance(value, str):
        return value
    try:
        return literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


def _type_name(value: Any) -> str:
    return type(value).__name__


def _coerce(value: Any, default: Any, full_key: str, source: str) -> Any:
    """Return ``value`` converted to the default's type, or raise a ``ConfigError`` saying how to fix it."""
    vtype, dtype = type(value), type(default)
    if vtype is dtype:
        return value
    if value is None or default is None:
        if vtype in _SCALAR_TYPES and dtype in _SCALAR_TYPES:
            return value
    if vtype in (list, tuple) and dtype in (list, tuple):
        return dtype(value)
    hint = ""
    if dtype is float and vtype is int:
        hint = f"; write {float(value)!r} (a float), not {value!r}"
    elif dtype is int and vtype is float and float(value).is_integer():
        hint = f"; write {int(value)!r} (an int), not {value!r}"
    elif dtype is str:
        hint = f'; write it as a quoted string, e.g. "{value}"'
    elif dtype is bool:
        hint = "; write True or False"
    elif dtype in (list, tuple):
        hint = f"; write a list, e.g. [{value!r}]"
    raise ConfigError(
        f"Config key {full_key} from {source} has the wrong type: expected {dtype.__name__} "
        f"(default {default!r}) but got {vtype.__name__} {value!r}{hint}"
    )


def _unknown_key(node: CfgNode, key: str, full_key: str, source: str) -> ConfigError:
    prefix = full_key[: -len(key)]
    close = difflib.get_close_matches(key, [str(k) for k in node.keys()], n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
    return ConfigError(f"Unknown config key {full_key} in {source}{hint}")


def _check_not_frozen(cfg: CfgNode, source: str) -> None:
    if cfg.is_frozen():
        raise ConfigError(f"Cannot merge {source}: the config is frozen")


def merge_mapping(cfg: CfgNode, mapping: Mapping, source: str, _prefix: str = "") -> CfgNode:
    """Merge a nested mapping (e.g. a loaded YAML) into ``cfg`` in place and return ``cfg``."""
    _check_not_frozen(cfg, source)
    for raw_key, raw_value in mapping.items():
        key = str(raw_key)
        full_key = _prefix + key
        if key not in cfg:
            if not cfg.is_new_allowed():
                raise _unknown_key(cfg, key, full_key, source)
            cfg[key] = CfgNode(raw_value) if isinstance(raw_value, dict) else _decode(raw_value)
            continue
        current = cfg[key]
        if isinstance(current, CfgNode):
            if not isinstance(raw_value, dict):
                raise ConfigError(
                    f"Config key {full_key} from {source} is a group of keys "
                    f"({', '.join(sorted(current.keys()))}); got a single value {raw_value!r}"
                )
            merge_mapping(current, raw_value, source, full_key + ".")
        elif isinstance(raw_value, dict):
            raise ConfigError(f"Config key {full_key} from {source} is a single value, not a group of keys")
        else:
            cfg[key] = _coerce(_decode(raw_value), current, full_key, source)
    return cfg


def merge_yaml(cfg: CfgNode, path: str) -> CfgNode:
    """Merge a YAML config file; errors name the file."""
    return merge_mapping(cfg, load_yaml(path), source=f'config file "{path}"')


def _set_by_full_key(cfg: CfgNode, full_key: str, value: Any, source: str, decode: bool) -> None:
    node = cfg
    parts = full_key.split(".")
    for depth, part in enumerate(parts):
        so_far = ".".join(parts[: depth + 1])
        if part not in node:
            if depth == len(parts) - 1 and node.is_new_allowed():
                node[part] = _decode(value) if decode else value
                return
            raise _unknown_key(node, part, so_far, source)
        if depth == len(parts) - 1:
            break
        node = node[part]
        if not isinstance(node, CfgNode):
            raise ConfigError(f"Config key {so_far} from {source} is a single value, so {full_key} does not exist")
    current = node[parts[-1]]
    if decode:
        value = _decode(value)
    if isinstance(current, CfgNode):
        if not isinstance(value, dict):
            raise ConfigError(
                f"Config key {full_key} from {source} is a group of keys "
                f"({', '.join(sorted(current.keys()))}); set one of them, e.g. {full_key}.{sorted(current.keys())[0]}"
            )
        merge_mapping(current, value, source, full_key + ".")
        return
    node[parts[-1]] = _coerce(value, current, full_key, source)


def merge_opts(cfg: CfgNode, opts: Optional[Sequence[str]], source: str = "command-line opts") -> CfgNode:
    """Merge trailing ``KEY VALUE`` pairs (values are decoded with ``literal_eval``)."""
    if not opts:
        return cfg
    _check_not_frozen(cfg, source)
    opts = list(opts)
    if len(opts) % 2 != 0:
        raise ConfigError(
            f"{source} must be KEY VALUE pairs, but got an odd number of items ({len(opts)}): "
            f"{' '.join(map(str, opts))}"
        )
    for full_key, value in zip(opts[0::2], opts[1::2]):
        _set_by_full_key(cfg, str(full_key), value, source, decode=True)
    return cfg


def merge_flags(cfg: CfgNode, flag_values: Iterable[Tuple[str, str, Any]]) -> CfgNode:
    """Merge ``(flag, KEY, value)`` triples from parsed command-line flags (values are used as given)."""
    for flag, full_key, value in flag_values:
        source = f"command-line flag {flag}"
        _check_not_frozen(cfg, source)
        _set_by_full_key(cfg, full_key, value, source, decode=False)
    return cfg


def merge_sources(
    cfg: CfgNode,
    dataset_yaml: Optional[str] = None,
    method_yaml: Optional[str] = None,
    flag_values: Iterable[Tuple[str, str, Any]] = (),
    opts: Optional[Sequence[str]] = None,
    freeze: bool = True,
) -> CfgNode:
    """Merge every source in Dassl's order and return ``cfg``.

    Order: (defaults already in ``cfg``) -> dataset YAML -> method YAML -> command-line flags
    -> trailing opts -> freeze. Later sources win.
    """
    if dataset_yaml:
        merge_yaml(cfg, dataset_yaml)
    if method_yaml:
        merge_yaml(cfg, method_yaml)
    merge_flags(cfg, flag_values)
    merge_opts(cfg, opts)
    if freeze:
        cfg.freeze()
    return cfg


class SourcedCfgNode(CfgNode):
    """A yacs ``CfgNode`` whose ``merge_from_*`` methods report the key and source on errors."""

    def merge_from_file(self, cfg_filename: str) -> None:
        merge_yaml(self, cfg_filename)

    def merge_from_list(self, cfg_list: List[str]) -> None:
        merge_opts(self, cfg_list)

    def merge_from_other_cfg(self, cfg_other: CfgNode) -> None:
        merge_mapping(self, cfg_other, source="another config")
