"""Which ``torch.compile`` settings a model accepts: what to compile with, never a command to run.

``ImageClassifier(compile={...})`` passes the dict to ``torch.compile``, and a config or checkpoint may carry it.
Inductor's ``options`` include settings that name programs and paths (``cpp.cxx`` is the C++ compiler command it
runs, split like a shell line), so a shared file could run any command through them. Only ``torch.compile``'s own
keyword arguments are accepted, and ``options`` only with switches and numbers, never text.
"""

from __future__ import annotations

from typing import Any

__all__ = ["COMPILE_KEYS", "check_compile_spec"]

#: the keyword arguments of ``torch.compile`` a spec may set
COMPILE_KEYS = ("fullgraph", "dynamic", "backend", "mode", "options", "disable")


def check_compile_spec(spec: Any) -> None:
    """Raise unless ``spec`` is a bool or a dict of ``torch.compile`` arguments whose ``options`` are not text.

    Example:
        >>> check_compile_spec({"mode": "max-autotune", "options": {"epilogue_fusion": True}})
    """
    if isinstance(spec, bool):
        return
    if not isinstance(spec, dict):
        raise TypeError(f"Expected `compile` to be a bool or a dict of torch.compile arguments, but got {spec!r}.")
    unknown = sorted(set(spec) - set(COMPILE_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown `compile` key(s) {', '.join(map(repr, unknown))}; torch.compile takes {', '.join(COMPILE_KEYS)}."
        )
    if spec.get("mode") is not None and not isinstance(spec["mode"], str):
        raise TypeError(f"Expected `compile['mode']` to be a name, but got {spec['mode']!r}.")
    backend = spec.get("backend")
    if backend is not None and not (isinstance(backend, str) or callable(backend)):  # a callable only from Python
        raise TypeError(f"Expected `compile['backend']` to be a backend name or a callable, but got {backend!r}.")
    options = spec.get("options") or {}
    if not isinstance(options, dict):
        raise TypeError(f"Expected `compile['options']` to be a dict of inductor settings, but got {options!r}.")
    texts = sorted(key for key, value in options.items() if not isinstance(value, (bool, int, float)))
    if texts:
        raise ValueError(
            f"`compile['options']` may set switches and numbers only, but {', '.join(map(repr, texts))} hold(s) other "
            "values: inductor settings that take text name programs and paths (`cpp.cxx` is a command it runs). Set "
            "those in your own code, or through TORCHINDUCTOR_* environment variables, not in a config."
        )
