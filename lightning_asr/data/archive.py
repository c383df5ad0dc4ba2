"""A Common Voice release as it is downloaded from the Mozilla Data Collective: a ``cv-corpus-*.tar.gz`` archive,
unpacked once, beside it, into the folder it holds (as ``tar xzf`` would), then read like any release folder."""

import logging
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

from lightning_asr.data.sources import DataConfigError

log = logging.getLogger(__name__)

SUFFIXES = (".tar.gz", ".tgz", ".tar")


def unpacked(path: str) -> str:
    """``path`` itself, unless it names an archive: then the release folder the archive unpacks to, beside it. The
    first call unpacks it into a hidden temporary folder that is renamed into place at the end, so a full disk or a
    kill leaves no half-written release behind; later calls find the folder and read it."""
    archive = Path(path).expanduser()
    if not archive.name.endswith(SUFFIXES):
        return path
    if not archive.is_file():
        raise DataConfigError(f"data.path: archive not found: {path}")
    top = _top_folder(archive)
    target = archive.parent / top
    if target.is_dir():
        return str(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{top}.", dir=archive.parent))
    try:
        _extract(archive, staging)
        try:
            (staging / top).rename(target)
        except OSError:
            if not target.is_dir():  # not another process that unpacked it first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    locales = sorted(p.name for p in target.iterdir() if p.is_dir())
    log.info("data.path: unpacked %s into %s (locales: %s)", archive.name, target, ", ".join(locales) or "none")
    return str(target)


def _top_folder(archive: Path) -> str:
    """The one folder every member of a release archive sits in (``cv-corpus-24.0-2025-12-05``)."""
    try:
        with tarfile.open(archive) as tar:
            first = tar.next()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataConfigError(f"data.path: {archive} is not a readable tar archive: {err}") from None
    if first is None:
        raise DataConfigError(f"data.path: {archive} is empty")
    top = Path(first.name).parts[0]
    if top in ("", ".", "..") or top.startswith("/"):
        raise DataConfigError(f"data.path: {archive} does not hold a release folder (first member {first.name!r})")
    return top


def _extract(archive: Path, into: Path) -> None:
    """Every member, each checked by tarfile's ``data`` filter (no links out, no absolute paths, no devices); a
    damaged archive is an error naming the member it broke at."""
    member = None
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                tar.extract(member, into, filter="data")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        at = f" at {member.name}" if member is not None else ""
        raise DataConfigError(f"data.path: {archive} is damaged or incomplete{at}: {err}; download it again") from None
