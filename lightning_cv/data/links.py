"""Which symbolic links an image-folder scan follows, and which relative paths a list file may name.

The rule: no path taken from the data leaves the folder it belongs in, unless the user allows it. A link in a class
folder is data, and so is a ``..`` in a list file's row; followed blindly they make setup hang (a folder that links
back to an ancestor is an endless tree) or relabel images (a link to a sibling class folder lists its images under
two classes). ``follow_links`` says what is followed:

* ``"inside"`` (the default): links to files or folders whose real location lies inside the data folder;
* ``"all"``: links wherever they point, for datasets built by linking into a central store;
* ``"none"``: no links at all.

In every mode a folder is listed once (a link to a folder listed already, or to one that contains the link, is a
loop or a repeat), and a file is listed once: its own, unlinked location wins, then the first link in listing
order; so an image never gets two labels. Whatever is skipped is reported, with the reason and the fix, in one
warning (:func:`skipped_report`).
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lightning_cv.data.image_io import is_image_file

__all__ = [
    "FOLLOW_LINKS",
    "FollowLinks",
    "ImageTreeWalk",
    "ListedPaths",
    "SkippedPath",
    "skipped_report",
    "warn_skipped",
]

FollowLinks = Literal["inside", "all", "none"]
FOLLOW_LINKS: tuple[str, ...] = ("inside", "all", "none")

#: what changes the outcome, by kind of skip
_REMEDIES = {
    "outside": "pass `follow_links='all'` to follow links wherever they point",
    "not followed": "pass `follow_links='inside'` (or 'all') to follow links",
    "loop": "remove links that point back into their own folder",
    "repeat": "remove links that repeat a folder or file listed already",
    "broken": "remove broken links or restore their targets",
    "special": "remove files that are not regular files (pipes, devices, sockets)",
    "unreadable": "check the folder's permissions",
}


@dataclass(frozen=True)
class SkippedPath:
    """A path a scan left out: ``kind`` is one of the keys of the remedies ("outside", "loop", "repeat"...)."""

    path: str
    reason: str
    kind: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def skipped_report(skipped: Sequence[SkippedPath], limit: int = 50) -> str:
    """One message for everything a scan skipped: each path and why, then what would change it."""
    lines = [f"  {s}" for s in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    remedies = list(dict.fromkeys(_REMEDIES[s.kind] for s in skipped))
    listing = "\n".join(lines)
    return f"Skipped {len(skipped)} path(s) while listing images:\n{listing}\nTo change this: {'; '.join(remedies)}."


def warn_skipped(skipped: Sequence[SkippedPath], collect: list[SkippedPath] | None) -> None:
    """Hand ``skipped`` to the caller's list, or, when the caller keeps none, warn once."""
    if collect is not None:
        collect.extend(skipped)
    elif skipped:
        warnings.warn(skipped_report(skipped), stacklevel=3)


def _check_mode(follow_links: str) -> None:
    if follow_links not in FOLLOW_LINKS:
        raise ValueError(f"Expected `follow_links` to be one of {', '.join(FOLLOW_LINKS)}, but got {follow_links!r}.")


def _as(listed: str | None, real: str) -> str:
    return f" as '{listed}'" if listed is not None and listed != real else ""


def _within(path: str, folder: str) -> bool:
    prefix = folder if folder.endswith(os.sep) else folder + os.sep
    return path == folder or path.startswith(prefix)


class ImageTreeWalk:
    """One listing of the image files under some folders, with the link rule applied.

    Folders reached without links are walked first (:meth:`add`); the links met on the way are followed afterwards
    (:meth:`finish`), so a file's own location always wins over a link to it, whichever sorts first. Files come in
    ``os.walk`` order (a folder's files, sorted, then its sub-folders), so a tree without links lists as before.

    Args:
        boundary: the data folder; with ``follow_links="inside"`` links must resolve into it.
        follow_links: ``"inside"``, ``"all"`` or ``"none"`` (see the module docstring).
    """

    def __init__(self, boundary: str | os.PathLike[str], follow_links: FollowLinks = "inside") -> None:
        _check_mode(follow_links)
        self.boundary = os.path.realpath(boundary)
        self.follow_links = follow_links
        self.found: dict[str, list[str]] = {}  # tag (class name) -> listed paths
        self.skipped: list[SkippedPath] = []
        self._dirs: dict[str, str | None] = {}  # real folder -> the path its files are listed under (None: not)
        self._linked_files: dict[str, str] = {}  # real file reached by a link to it -> the link
        self._links: deque[tuple[str, str, str]] = deque()  # (link, real folder holding it, tag)

    def mark(self, folder: str | os.PathLike[str]) -> None:
        """Count ``folder`` as visited without listing its files (the data root above the class folders)."""
        self._dirs.setdefault(os.path.realpath(folder), None)

    def add(self, path: str | os.PathLike[str], tag: str = "", *, named: bool = False) -> None:
        """List the images below ``path`` under ``tag``; when ``path`` is a link, it is followed in :meth:`finish`.

        ``named``: the user named this folder, so it is entered even when it is a link.
        """
        path = os.fspath(path)
        self.found.setdefault(tag, [])
        if os.path.islink(path) and not named:
            self._links.append((path, os.path.realpath(os.path.dirname(path) or "."), tag))
        else:
            self._tree(path, os.path.realpath(path), tag, linked=False)

    def finish(self) -> dict[str, list[str]]:
        """Follow the links met so far (and those they lead to); the listed paths by tag."""
        while self._links:
            self._follow(*self._links.popleft())
        return self.found

    # ------------------------------------------------------------------ internals
    def _skip(self, path: str, reason: str, kind: str) -> None:
        self.skipped.append(SkippedPath(path, reason, kind))

    def _tree(self, top: str, real_top: str, tag: str, linked: bool) -> None:
        out = self.found[tag]
        stack = [(top, real_top)]
        while stack:  # iterative: a deep tree must not hit the recursion limit
            folder, real = stack.pop()
            if real in self._dirs:  # a folder inside a linked one, listed already by another way
                self._skip(folder, f"the folder '{real}', listed already{_as(self._dirs[real], real)}", "repeat")
                continue
            self._dirs[real] = folder
            try:
                with os.scandir(folder) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as err:
                self._skip(folder, f"cannot be read ({type(err).__name__}: {err.strerror or err})", "unreadable")
                continue
            subfolders = []
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                if entry.is_symlink():
                    self._links.append((entry.path, real, tag))
                elif entry.is_dir(follow_symlinks=False):
                    subfolders.append((entry.path, os.path.join(real, name)))
                elif is_image_file(name):
                    if not entry.is_file(follow_symlinks=False):
                        self._skip(entry.path, "not a regular file", "special")
                    elif linked and (real_file := os.path.join(real, name)) in self._linked_files:
                        first = self._linked_files[real_file]
                        self._skip(entry.path, f"the file '{real_file}', listed already as '{first}'", "repeat")
                    else:
                        out.append(entry.path)
            stack.extend(reversed(subfolders))

    def _listed_as(self, real_file: str) -> str | None:
        folder, name = os.path.split(real_file)
        listed = self._dirs.get(folder)
        if listed is not None and is_image_file(name):
            return os.path.join(listed, name)
        return self._linked_files.get(real_file)

    def _follow(self, link: str, holder: str, tag: str) -> None:
        target = os.path.realpath(link)
        is_dir = os.path.isdir(target)
        if not is_dir and not is_image_file(link):
            return  # like any file that is not an image
        if self.follow_links == "none":
            self._skip(link, f"a link to '{target}' (follow_links='none')", "not followed")
        elif not os.path.exists(target):
            self._skip(link, f"a broken link (to '{target}')", "broken")
        elif self.follow_links == "inside" and not _within(target, self.boundary):
            self._skip(link, f"a link to '{target}', outside the data folder '{self.boundary}'", "outside")
        elif is_dir and (_within(holder, target) or self._dirs.get(target, "") is None):
            self._skip(link, f"a link to '{target}', a folder that contains it (a loop)", "loop")
        elif is_dir and target in self._dirs:
            listed = _as(self._dirs[target], target)
            self._skip(link, f"a link to '{target}', a folder listed already{listed}", "repeat")
        elif is_dir:
            self._tree(link, target, tag, linked=True)
        elif not os.path.isfile(target):
            self._skip(link, f"a link to '{target}', which is not a regular file", "special")
        elif (first := self._listed_as(target)) is not None:
            self._skip(link, f"a link to '{target}', a file listed already{_as(first, target)}", "repeat")
        else:
            self._linked_files[target] = link
            self.found[tag].append(link)


class ListedPaths:
    """The paths a list file's rows name, resolved against its root, with the rule applied to relative paths.

    An absolute path is used as written: whoever wrote it has said where the file is (lists made with ``find
    /data ...`` are common). A relative path means "inside the root"; one that leaves it, by ``..`` or through a
    link, is refused unless ``follow_links="all"``; with ``"none"`` a relative path may not pass through links at
    all. This guards against mistakes and against links planted in a dataset; a list from elsewhere can still name
    any file by its absolute path, so read such lists before training on them.
    """

    def __init__(self, root: str | os.PathLike[str], follow_links: FollowLinks = "inside") -> None:
        _check_mode(follow_links)
        self.root = Path(root)
        self.follow_links = follow_links
        self.refused: list[tuple[int, str, str]] = []  # (row number, path as written, why)
        self._real_root = os.path.realpath(root)
        self._real_dirs: dict[str, str] = {}

    def resolve(self, cell: str, row: int) -> str:
        """The path to read for ``cell``; a refused one is noted in :attr:`refused` (see :meth:`check`)."""
        image = Path(cell)
        if image.is_absolute():
            return str(image)
        path = str(self.root / image)
        if self.follow_links == "all":
            return path
        relative = os.path.normpath(cell)
        climbs = relative == os.pardir or relative.startswith(os.pardir + os.sep)
        real = self._real(path, image)
        why = "climbs out of the folder with '..'" if climbs else f"leads through a link to '{real}'"
        if self.follow_links == "none":
            if climbs or real != os.path.join(self._real_root, relative):
                self.refused.append((row, cell, why))
        elif not _within(real, self._real_root):
            self.refused.append((row, cell, why))
        return path

    def check(self, file: str | os.PathLike[str]) -> None:
        """Raise one error naming every refused row of ``file``."""
        if not self.refused:
            return
        rows = "\n".join(f"  row {n}: '{cell}' {why}" for n, cell, why in self.refused[:20])
        more = f"\n  ... and {len(self.refused) - 20} more" if len(self.refused) > 20 else ""
        inside = " (or 'inside' for links that stay in the folder)" if self.follow_links == "none" else ""
        raise ValueError(
            f"{file}: {len(self.refused)} row(s) name files outside '{self.root}', the folder relative paths are taken "
            f"from, or reach them through links (follow_links={self.follow_links!r}):\n{rows}{more}\nPoint "
            "`data_dir` at a folder that holds them all, write their absolute paths, or pass `follow_links='all'` to "
            f"accept relative paths that leave the folder{inside}."
        )

    def _real(self, path: str, written: Path) -> str:
        if os.pardir in written.parts:
            return os.path.realpath(path)  # '..' after a link climbs from the link's target, as the OS reads it
        folder, name = os.path.split(path)
        real_folder = self._real_dirs.get(folder)
        if real_folder is None:
            real_folder = self._real_dirs[folder] = os.path.realpath(folder)
        candidate = os.path.join(real_folder, name)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate
