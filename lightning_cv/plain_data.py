"""Options that are plain data: keyword arguments and settings dicts never name classes to build.

jsonargparse builds a ``{"class_path": ..., "init_args": ...}`` it finds in an option typed ``Any`` or ``dict``
unless told not to (its default changes in 5.0), and LightningCLI re-parses a checkpoint's hyperparameters with it.
Such a spec in a shared config or checkpoint can name any callable on the machine (``sympy.Lambda`` evaluates a
string), so lightning_cv keeps these options as data and refuses a class spec in them by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["class_specs", "refuse_class_specs"]


def class_specs(value: Any, where: str = "") -> list[str]:
    """Where ``value`` holds a class spec (a mapping with a ``class_path``), as dotted keys, each with its class.

    Example:
        >>> class_specs({"a": 1, "b": [{"class_path": "os.system"}]}, "kwargs")
        ["kwargs.b.0 (class_path 'os.system')"]
    """
    found: list[str] = []
    if callable(getattr(value, "as_dict", None)):  # a jsonargparse Namespace: how it keeps an unbuilt spec
        value = value.as_dict()
    if isinstance(value, Mapping):
        if "class_path" in value:
            found.append(f"{where or '<top>'} (class_path {value['class_path']!r})")
        for key, item in value.items():
            found += class_specs(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found += class_specs(item, f"{where}.{i}" if where else str(i))
    return found


def refuse_class_specs(value: Any, name: str) -> None:
    """Raise if an option that is plain data (keyword arguments, a dict of settings) holds a class spec.

    The command line tells jsonargparse not to build such specs; one that arrives here anyway (from Python, a config
    or a checkpoint) would only fail later inside timm or a dataset with an unrelated message, so it is refused by
    name.
    """
    found = class_specs(value, name)
    if found:
        raise ValueError(
            f"`{name}` holds a class spec at {', '.join(found)}. lightning_cv passes `{name}` on as plain data "
            "(numbers, strings, lists, dicts) and never builds classes named in it; give the values themselves."
        )
