"""The parser every subcommand uses: its safety settings, and one-line errors that name the option and the fix.

Shared by ``fit``/``validate``/``test``/``predict`` (LightningCLI) and ``export``/``benchmark``/``explain``, so they
all read configs the same way and fail the same way: one line, exit code 2, no traceback.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser

__all__ = [
    "ALLOW_IMPORTS_ENV",
    "IMPORT_ALLOWLIST",
    "ShortErrorParser",
    "check_config_files",
    "error_line",
    "secure_parsing",
    "short_error",
]

#: what a config may name in a class path or as a callable: Lightning's pluggable parts, optimizers and schedulers,
#: and lightning_cv. Everything else is denied before it is imported (an allowlist: no denylist can know every
#: callable that evaluates a string, such as sympy.Lambda, or modules that act when imported).
IMPORT_ALLOWLIST = [
    "lightning.pytorch.accelerators",
    "lightning.pytorch.callbacks",
    "lightning.pytorch.loggers",
    "lightning.pytorch.plugins",
    "lightning.pytorch.profilers",
    "lightning.pytorch.strategies",
    "lightning.fabric.plugins",
    "lightning_cv",
    "torch.optim",
]
#: the environment variable that adds modules of your own to :data:`IMPORT_ALLOWLIST` (comma-separated). An
#: environment variable, not an option: a config must not be able to widen what it may import.
ALLOW_IMPORTS_ENV = "LIGHTNING_CV_ALLOW_IMPORTS"


def secure_parsing() -> None:
    """Read configs as data: dict-typed options never build a class spec, and class paths or callables may only
    name modules on :data:`IMPORT_ALLOWLIST` (plus those in ``$LIGHTNING_CV_ALLOW_IMPORTS``).

    jsonargparse builds a ``{"class_path": ...}`` found in an option typed ``Any`` or ``dict`` until its 5.0 unless
    told not to; ``backbone_kwargs``, ``dataset_kwargs`` and ``compile`` are such options, and a shared config could
    name any callable there. A class option (a callback, a logger) builds only subclasses of its type, but their
    arguments may be callables (``LambdaCallback(on_fit_start=...)``), so what may be named at all is allowlisted.
    These are process-wide jsonargparse settings, applied when a subcommand starts.
    """
    from jsonargparse import set_parsing_settings

    own = [m.strip() for m in os.environ.get(ALLOW_IMPORTS_ENV, "").split(",") if m.strip()]
    set_parsing_settings(
        import_path_denylist=["*"],
        import_path_allowlist=[*IMPORT_ALLOWLIST, *own],
        instantiate_subclass_spec_in_any=False,
    )


class ShortErrorParser(LightningArgumentParser):
    """Answers a bad argument with one usage line and the error, not the 130-line usage of every option."""

    def print_usage(self, file: Any = None) -> None:
        prog = self.prog.replace(" [options]", "")
        (file or sys.stderr).write(f"usage: {prog} [options]\n")

    def error(self, message: str, ex: Exception | None = None) -> Any:
        return super().error(short_error(message), ex)


_EXPECTED = re.compile(r"Expected a (?:<class '([\w.]+)'>|typing\.Literal\[(.*)\])")


def short_error(message: str) -> str:
    """jsonargparse's type error (key, subtypes, one line per failed subtype, value type) as one line; a missing
    required option named as it is typed; an import the allowlist refuses, with how to allow it.

    Example:
        >>> short_error('Parser key "trainer.max_epochs":\\n  Expected a <class \\'int\\'>. Got value: ten')
        '`--trainer.max_epochs` expects int, but got `ten`.'
    """
    required = re.fullmatch(r"the following arguments are required: (.*)", message.strip())
    if required:  # name them as they are typed
        return "missing " + ", ".join(f"`--{name.strip()}`" for name in required.group(1).split(",")) + "."
    denied = re.search(r"Importing '([^']+)' is not allowed", message)
    if denied:
        where = re.match(r'Parser key "([^"]+)":', message)
        option = f"`--{where.group(1)}`: " if where else ""
        module = denied.group(1).rsplit(".", 1)[0]
        return (
            f"{option}'{denied.group(1)}' may not be imported from a config: only "
            f"{', '.join(IMPORT_ALLOWLIST)} may. To allow a module of your own, set {ALLOW_IMPORTS_ENV}={module}."
        )
    reasons = re.findall(r"^ {4}- (.*)$", message, re.MULTILINE)  # one per Union subtype
    if any(not reason.startswith("Expected a ") for reason in reasons):
        return message  # a real reason (a denied import, a bad class path) must not be lost
    key = re.match(r'Parser key "([^"]+)":', message)
    given = re.search(r"(?:Given value|Got value): (.*)$", message, re.MULTILINE)
    expected: list[str] = []
    for match in _EXPECTED.finditer(message):
        name, literal = match.groups()
        text = ("None" if name == "NoneType" else name.rsplit(".", 1)[-1]) if name else f"one of {literal}"
        if text not in expected:
            expected.append(text)
    if key is None or given is None or not expected:
        return message
    return f"`--{key.group(1)}` expects {' or '.join(expected)}, but got `{given.group(1).strip()}`."


def check_config_files(argv: list[str]) -> None:
    """Name the file when a ``--config`` is not valid YAML (jsonargparse reports a position in "<unicode string>")."""
    import yaml

    for i, arg in enumerate(argv):
        path = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else arg.partition("=")[2]
        if not (arg == "--config" or arg.startswith("--config=")) or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as stream:
            try:
                yaml.safe_load(stream)
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
                problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                raise ValueError(f"Config file '{path}' is not valid YAML{where}: {problem}.") from err


def error_line(err: BaseException) -> str:
    """What the user sees for an error we expect (bad input): one line, and how to get the traceback."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    message = str(err).strip() or type(err).__name__
    if isinstance(err, MisconfigurationException):
        message += " (a Trainer setting: check --trainer.accelerator, --trainer.devices and --trainer.strategy)"
    return f"lightning-cv: error: {message}\n(set LIGHTNING_CV_DEBUG=1 to see the traceback)"
