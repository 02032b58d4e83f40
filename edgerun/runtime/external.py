"""Where ONNX external data may come from: inside the model's own folder, and nowhere else.

The onnx package learned this from CVEs (path traversal, symlinks, hard links): a location
is a plain relative path, resolved under the folder, opened without following links, and
checked to be a regular file with a single link before it is mapped.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from pathlib import Path, PurePosixPath

from edgerun.errors import ModelFormatError, UnsafePathError


def check_relative(location: str, what: str) -> tuple[str, ...]:
    """The parts of a safe relative location; anything that could escape is refused."""
    if not location or "\x00" in location:
        raise UnsafePathError(f"{what}: empty or invalid external data location")
    if "\\" in location or location.startswith("/") or (len(location) > 1 and location[1] == ":"):
        raise UnsafePathError(f"{what}: external data location {location!r} is not relative")
    parts = PurePosixPath(location).parts
    if any(p in ("", ".", "..") for p in parts) or location.endswith("/"):
        raise UnsafePathError(f"{what}: external data location {location!r} leaves its folder")
    return parts


class FolderResolver:
    """Maps external-data files from one folder; each file is mapped once and shared."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._maps: dict[str, memoryview] = {}

    def __call__(self, location: str) -> memoryview:
        if location not in self._maps:
            self._maps[location] = self._map(location)
        return self._maps[location]

    def _map(self, location: str) -> memoryview:
        parts = check_relative(location, str(self.folder))
        fd = self._open_no_follow(parts, location)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UnsafePathError(f"{location!r}: external data is not a regular file")
            if info.st_nlink > 1:
                raise UnsafePathError(f"{location!r}: external data file is a hard link")
            if info.st_size == 0:
                return memoryview(b"")
            return memoryview(mmap.mmap(fd, 0, access=mmap.ACCESS_READ))
        finally:
            os.close(fd)

    def _open_no_follow(self, parts: tuple[str, ...], location: str) -> int:
        """Walk the parts with O_NOFOLLOW, so no component may be a symlink."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        dir_flags = flags | getattr(os, "O_DIRECTORY", 0)
        try:
            fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise ModelFormatError(f"{self.folder}: cannot open model folder: {exc}") from None
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                new = os.open(part, (flags | os.O_NONBLOCK) if last else dir_flags, dir_fd=fd)
                os.close(fd)
                fd = new
            return fd
        except FileNotFoundError:
            os.close(fd)
            raise ModelFormatError(
                f"external data file {location!r} not found in {self.folder}"
            ) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):  # a symlink on the way
                raise UnsafePathError(
                    f"external data {location!r} goes through a symlink"
                ) from None
            raise ModelFormatError(f"external data {location!r}: {exc.strerror}") from None
