"""What every command that writes checks about its outputs, and how it writes results.

Two checks, both made before any work (:func:`prepare_output` makes both), so that an unusable
output costs nothing:

* :func:`check_output`: an output must never be an input, lie inside an input folder, contain
  one, or overwrite an input file (symlinks and hard links are seen through);
* :func:`ensure_writable`: the output can be created where it is asked for (not a file where a
  folder is needed or the other way round, not a read-only folder, not ``/proc``).

And one way to write a computed result, :func:`write_result`: atomically where asked, or, when
that fails after the work, into a temporary file whose path is printed, so that results are
never lost to an output error.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["OutputError", "check_output", "ensure_writable", "prepare_output", "write_result"]

Kind = Literal["dir", "file"]

#: images written into an input folder would become inputs of the next run.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")


class OutputError(ValueError):
    """An output that must not or cannot be written; the text names the flag and the fix."""


def _same(a: Path, b: Path) -> bool:
    """The same file or folder (resolved symlinks, or the same inode for hard links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    """``path`` lies (strictly) inside ``folder``, symlinks resolved."""
    path, folder = path.resolve(), folder.resolve()
    return path != folder and path.is_relative_to(folder)


def _paths(inputs: Iterable[Any]) -> list[Path]:
    """The input paths, flattened (an option given several times is a list) and without None."""
    found: list[Path] = []
    for item in inputs:
        if isinstance(item, list | tuple):
            found += _paths(item)
        elif item is not None:
            found.append(Path(item))
    return found


def check_output(
    out: str | Path,
    inputs: Iterable[str | Path | Sequence[str | Path] | None],
    kind: Kind = "dir",
    *,
    flag: str = "--out",
    targets: Iterable[str | Path] = (),
) -> None:
    """Raise OutputError when writing ``out`` could destroy or pollute an input.

    ``kind='dir'``: a folder the command fills; refused when it is an input, lies inside an
    input folder, or contains one. ``kind='file'``: refused when it is an input, or when it is
    an image inside an input folder (it would be read as an input next time). ``targets``: the
    files the command will write, when it knows them (each must not be an input file).
    """
    out = Path(out)
    given = _paths(inputs)
    for source in given:
        if not source.exists():
            continue
        if _same(out, source):
            raise OutputError(f"{flag} {out} is the input {source}: it would be overwritten; "
                              "choose an output outside the inputs")
        folder = source.is_dir()
        if folder and _inside(out, source) and (kind == "dir" or _is_image(out)):
            if out.is_file() and _is_image(out):
                raise OutputError(f"{flag} {out} is an image of the input folder {source}: it "
                                  "would be overwritten; choose an output outside the inputs")
            raise OutputError(f"{flag} {out} lies inside the input folder {source}: what is "
                              "written there would mix with the inputs; choose an output "
                              "outside them")
        if folder and kind == "dir" and _inside(source, out):
            raise OutputError(f"{flag} {out} contains the input folder {source}; choose an "
                              "output folder outside the inputs")
    for target in map(Path, targets):
        for source in given:
            if source.is_file() and _same(target, source):
                raise OutputError(f"{flag} {out}: writing {target} would overwrite the input "
                                  f"{source}; choose an output outside the inputs")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe(folder: Path, out: Path, flag: str) -> None:
    """Create and remove a file in ``folder``: the only check that sees read-only mounts,
    permissions (root included) and kernel filesystems alike."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".mmdrfuse-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        kernel = Path(os.path.abspath(folder)).parts[1:2] in (("proc",), ("sys",))
        reason = "a kernel filesystem" if kernel else exc.strerror or str(exc)
        raise OutputError(f"{flag} {out}: cannot write into {folder} ({reason}); choose a "
                          "writable place") from None


def prepare_output(out: str | Path, inputs: Iterable[str | Path | Sequence[str | Path] | None],
                   kind: Kind = "dir", *, flag: str = "--out",
                   targets: Iterable[str | Path] = ()) -> None:
    """Both checks a command makes of an output before its work: :func:`check_output`, then
    :func:`ensure_writable`. Raises OutputError with what to change."""
    check_output(out, inputs, kind, flag=flag, targets=targets)
    ensure_writable(out, kind, flag=flag)


def ensure_writable(out: str | Path, kind: Kind = "dir", *, flag: str = "--out") -> None:
    """Raise OutputError unless ``out`` (a folder or a file, existing or not) can be written.

    Nothing is created; call it before the work. A folder that does not exist yet is checked
    where it would be created.
    """
    out = Path(out)
    if out.exists():
        if kind == "dir":
            if not out.is_dir():
                raise OutputError(f"{flag} {out} is not a folder (a file is in the way); "
                                  "choose a folder path")
            _probe(out, out, flag)
            return
        if out.is_dir():
            raise OutputError(f"{flag} {out} is a folder; give a file path")
        try:  # an existing file, /dev/stdout or a FIFO with a reader: can it be opened?
            os.close(os.open(out, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK))
        except OSError as exc:
            raise OutputError(f"{flag} {out}: cannot write it ({exc.strerror or exc})") from None
        return
    ancestor = _existing_ancestor(out)
    if not ancestor.is_dir():
        raise OutputError(f"{flag} {out}: {ancestor} is not a folder (a file is in the way); "
                          "choose another path")
    _probe(ancestor, out, flag)


def _replace_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(path: Path, text: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        with open(path, "w") as handle:  # /dev/stdout, a FIFO: write through, never replace
            handle.write(text)
        return
    _replace_atomically(path.resolve(), text)


def write_result(path: str | Path, text: str, what: str = "result") -> Path | None:
    """Write ``text`` to ``path``; on failure save it to a temporary file and say where on
    stderr (or print it when even that fails). Returns ``path``, the fallback path, or None
    when the text went to stdout; the caller exits non-zero unless ``path`` came back."""
    path = Path(path)
    try:
        _write(path, text)
        return path
    except OSError as exc:
        reason = exc.strerror or str(exc)
    try:
        fd, fallback = tempfile.mkstemp(prefix=f"mmdrfuse-{path.stem}-", suffix=path.suffix)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    except OSError:
        print(f"error: cannot write the {what} to {path} ({reason}) nor to a temporary file; "
              "here it is:", file=sys.stderr)
        print(text, end="" if text.endswith("\n") else "\n")
        return None
    print(f"error: cannot write the {what} to {path} ({reason}); saved it to {fallback} "
          "instead", file=sys.stderr)
    return Path(fallback)
