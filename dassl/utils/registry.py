"""Name -> object registries (trainers, datasets, evaluators), filled by import side effects."""
from __future__ import annotations

from typing import Any, Dict, List

from dassl.utils.tools import UserError

__all__ = ["Registry", "RegistryError"]


class RegistryError(UserError, KeyError):
    """A registry lookup or registration failed (unknown or duplicate name)."""

    def __str__(self) -> str:  # KeyError would quote the message; show it as written.
        return str(self.args[0]) if self.args else ""


class Registry:
    """A mapping from an object's ``__name__`` to the object.

    Use ``@REG.register()`` on a class or function, or ``REG.register(obj)`` directly.
    A name can be registered only once unless ``force=True``.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._obj_map: Dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._name

    def _do_register(self, name: str, obj: Any, force: bool = False) -> None:
        if name in self._obj_map and not force:
            raise RegistryError(
                f'An object named "{name}" was already registered in "{self._name}" registry'
            )
        self._obj_map[name] = obj

    def register(self, obj: Any = None, force: bool = False) -> Any:
        """Register ``obj`` under ``obj.__name__``; without ``obj`` return a decorator."""
        if obj is None:

            def decorator(func_or_class: Any) -> Any:
                self._do_register(func_or_class.__name__, func_or_class, force=force)
                return func_or_class

            return decorator
        self._do_register(obj.__name__, obj, force=force)
        return obj

    def get(self, name: str) -> Any:
        """Return the object registered as ``name``; unknown names list what is registered."""
        if name not in self._obj_map:
            known = ", ".join(sorted(self._obj_map)) or "(none)"
            raise RegistryError(
                f'Object name "{name}" does not exist in "{self._name}" registry; '
                f"registered names: {known}"
            )
        return self._obj_map[name]

    def registered_names(self) -> List[str]:
        """Names in registration order."""
        return list(self._obj_map.keys())

    def __contains__(self, name: object) -> bool:
        return name in self._obj_map

    def __len__(self) -> int:
        return len(self._obj_map)

    def __repr__(self) -> str:
        return f"Registry(name={self._name!r}, names={self.registered_names()!r})"
