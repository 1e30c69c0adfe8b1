"""A guarded reader of ``.npz`` files: headers first, data only within declared bounds.

``np.load`` reads whole members before anything can be checked and lets whatever
:mod:`zipfile`, :mod:`zlib` and :mod:`numpy.lib.format` raise escape. :class:`NpzReader`
is what :meth:`tapegrad.Tape.load` and :meth:`tapegrad.nn.Module.load` use instead:

1. **the path**: a NUL character, a symlink loop, a directory or a file that is not a
   regular file (a FIFO would block ``open`` forever) is reported before anything is
   read; the file is opened non-blocking and checked with ``fstat`` on the open
   descriptor, so a FIFO swapped in after a check cannot hang the reader either;
2. **the archive**: a single ``.npy`` is told apart from an ``.npz``; the end of central
   directory record is checked before :class:`zipfile.ZipFile` parses the directory,
   so a directory of a million entries is never materialised (at most ``max_members``
   entries of bounded size); every entry must be a ``.npy`` member, stored or deflated,
   not encrypted, listed once, and lie inside the file;
3. **the headers**: every member's ``.npy`` header is parsed (``read_magic`` +
   ``read_array_header_1_0/2_0``, nothing of the data) and must declare exactly the
   bytes its zip entry holds (``ZipInfo.file_size``), no more than its compressed bytes
   can expand to (deflate stays below 1032:1), with no object dtype (no pickle);
4. **the data**: :meth:`NpzReader.read` reads exactly the declared bytes of one member,
   in chunks, into one buffer of that size; the zip's CRC is checked at the end.

Callers check :attr:`NpzReader.headers` (names, dtypes, shapes, sizes against their
schema: :func:`check_members` does names, kinds and dimensions) between steps 3 and 4,
so nothing a file declares is allocated before it has been found consistent.

Everything that goes wrong inside the archive raises ``ValueError`` whose text comes
from the caller's ``unreadable(kind, detail)``: ``kind`` is ``"archive"`` (not a zip
archive; ``detail`` may say more), ``"npy"`` (a single ``.npy`` array) or ``"content"``
(anything else, ``detail`` says what). Path problems raise ``OSError`` subclasses
(``ValueError`` for a NUL in the path or a file that is not a regular file).
``KeyboardInterrupt`` is never caught.
"""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

import numpy as np

__all__ = ["Header", "Member", "NpzReader", "check_members", "OBJECT_ARRAYS"]

OBJECT_ARRAYS = "ValueError: Object arrays cannot be loaded when allow_pickle=False"
"""The detail given for a member whose dtype needs pickle (the text ``np.load`` uses)."""

_MAX_DEFLATE_RATIO = 1032       # deflate cannot expand a byte to more than ~1032
_CHUNK = 1 << 20                # bytes per read of a member's data
_MAX_HEADER = 10_000            # numpy's own limit on a header's text
_MAX_ENTRY_BYTES = 46 + 2048    # central directory bytes per entry: fixed part, name, extra
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError,
               struct.error, UnicodeDecodeError, KeyError, IndexError, TypeError,
               OverflowError, MemoryError, ValueError, OSError, SyntaxError)
"""What zipfile, zlib and numpy raise on malformed input (RuntimeError: an encrypted
entry; RecursionError is a RuntimeError)."""


class Header(NamedTuple):
    """What one member's ``.npy`` header declares (its data not yet read)."""
    name: str                    # member name without ".npy"
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int                  # bytes of the .npy header before the data
    nbytes: int                  # bytes of data the header declares

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class Member(NamedTuple):
    """Schema of one member for :func:`check_members`: dtype kinds and dimensions."""
    kinds: str
    ndim: int


def _default_unreadable(where: object, what: str) -> Callable[[str, str | None], str]:
    def unreadable(kind: str, detail: str | None) -> str:
        why = {"archive": "not an .npz archive", "npy": "a single .npy array, not an .npz "
               "archive"}.get(kind, detail or "")
        if kind == "archive" and detail:
            why += f": {detail}"
        return f"{where}: not a readable {what} ({why})"
    return unreadable


def _describe(err: BaseException) -> str:
    """``"zlib.error: Error -3 ..."``: the exception's type (with its module unless a
    builtin) and text."""
    kind = type(err)
    name = kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"
    return f"{name}: {err}" if str(err) else name


def _open_regular(where: str | bytes, what: str) -> io.BufferedReader:
    """Open ``where`` for reading if it is a regular file; clear errors otherwise."""
    if ("\0" if isinstance(where, str) else b"\0") in where:
        raise ValueError(f"{where!r}: path contains a NUL character, it cannot name a file")
    try:
        fd = os.open(where, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_BINARY", 0))
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, f"{where!r}: symlink loop (too many levels of "
                          "symbolic links), not a file") from None
        if err.errno == errno.EISDIR:      # Windows; Linux opens a directory, fstat below
            raise IsADirectoryError(errno.EISDIR, f"{where} is a directory, not a {what}") \
                from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, f"{where} is a directory, not a {what}")
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a special file")
            raise ValueError(f"{where} is not a regular file ({kind}), not a {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _central_directory(f: io.BufferedReader, size: int) -> tuple[int, int] | None:
    """(entries, bytes) of the central directory as the end record declares them, or
    None when there is no end record (not a zip). Mirrors zipfile's search: the last
    end-of-central-directory signature within the last 64 KiB + 22 bytes, with the
    zip64 record just before its locator when the 16/32-bit fields overflow."""
    tail_size = min(size, 22 + 0xFFFF)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    entries, cd_bytes = struct.unpack("<HI", tail[at + 10: at + 16])
    if entries == 0xFFFF or cd_bytes == 0xFFFFFFFF:
        locator = size - tail_size + at - 20
        if locator >= 56:
            f.seek(locator)
            loc = f.read(20)
            if loc[:4] == b"PK\x06\x07":
                f.seek(locator - 56)
                rec = f.read(56)
                if rec[:4] == b"PK\x06\x06":
                    entries, cd_bytes = struct.unpack("<QQ", rec[32:48])
    return entries, cd_bytes


class NpzReader:
    """An open ``.npz`` whose member headers have been read and checked (see the module
    docstring); use as a context manager, check :attr:`headers`, then :meth:`read`.

    ``what`` names the kind of file in path messages ("tape file"); ``max_members``
    bounds the archive's entries; ``unreadable(kind, detail)`` gives the text of the
    ValueError for a file that cannot be read.
    """

    def __init__(self, path: str | os.PathLike, *, what: str, max_members: int,
                 unreadable: Callable[[str, str | None], str] | None = None) -> None:
        where = os.fspath(path)
        self.path = where
        self._unreadable = unreadable or _default_unreadable(where, what)
        self._file = _open_regular(where, what)
        self._zip: zipfile.ZipFile | None = None
        try:
            self._open(max_members)
        except BaseException:
            self.close()
            raise

    # -- errors ---------------------------------------------------------------------------

    def _error(self, kind: str, detail: str | None = None) -> ValueError:
        return ValueError(self._unreadable(kind, detail))

    def _member_error(self, name: str, detail: str) -> ValueError:
        return self._error("content", f"member {name!r}: {detail}")

    # -- opening --------------------------------------------------------------------------

    def _open(self, max_members: int) -> None:
        f = self._file
        try:
            size = os.fstat(f.fileno()).st_size
            start = f.read(len(np.lib.format.MAGIC_PREFIX))
            directory = _central_directory(f, size)
        except _ZIP_ERRORS as err:
            raise self._error("archive", _describe(err)) from None
        if start == np.lib.format.MAGIC_PREFIX:
            raise self._error("npy")
        if directory is None:
            raise self._error("archive")
        entries, cd_bytes = directory
        if entries > max_members or cd_bytes > max_members * _MAX_ENTRY_BYTES:
            raise self._error("content", f"its directory declares {entries} entries in "
                                         f"{cd_bytes} bytes; at most {max_members} expected")
        try:
            f.seek(0)
            self._zip = zipfile.ZipFile(f)
            infos = self._zip.infolist()
        except zipfile.BadZipFile as err:
            raise self._error("archive", None if str(err) == "File is not a zip file"
                              else _describe(err)) from None
        except _ZIP_ERRORS as err:
            raise self._error("archive", _describe(err)) from None
        if len(infos) > max_members:
            raise self._error("content", f"it has {len(infos)} entries; at most "
                                         f"{max_members} expected")
        self.size = size
        self.infos: dict[str, zipfile.ZipInfo] = {}
        self.headers: dict[str, Header] = {}
        for info in infos:
            self._check_entry(info)
        for name, info in self.infos.items():
            self.headers[name] = self._read_header(name, info)

    def _check_entry(self, info: zipfile.ZipInfo) -> None:
        fname = info.filename
        if not fname.endswith(".npy"):
            raise self._member_error(fname, "not an .npy array")
        name = fname[:-4]
        if name in self.infos:
            raise self._member_error(fname, "listed twice")
        if info.flag_bits & 0x41:           # bit 0: encrypted, bit 6: strong encryption
            raise self._member_error(fname, "encrypted")
        if info.flag_bits & 0x20:
            raise self._member_error(fname, "compressed patched data")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self._member_error(fname, f"unsupported compression method "
                                            f"{info.compress_type}")
        if info.header_offset + 30 + info.compress_size > self.size:
            raise self._member_error(fname, f"its {info.compress_size} bytes extend past the "
                                            f"end of the file ({self.size} bytes)")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise self._member_error(fname, f"stored with {info.compress_size} bytes but "
                                            f"declares {info.file_size}")
        if info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 1024:
            raise self._member_error(fname, f"declares {info.file_size} bytes, more than its "
                                            f"{info.compress_size} compressed bytes can hold")
        self.infos[name] = info

    def _open_member(self, info: zipfile.ZipInfo):
        assert self._zip is not None
        return self._zip.open(info)

    def _read_header(self, name: str, info: zipfile.ZipInfo) -> Header:
        fname = info.filename
        fmt = np.lib.format
        try:
            with self._open_member(info) as f:
                version = fmt.read_magic(f)
                read_header = {(1, 0): fmt.read_array_header_1_0,
                               (2, 0): fmt.read_array_header_2_0}.get(version)
                if read_header is not None:
                    shape, fortran, dtype = read_header(f, _MAX_HEADER)
                    offset = f.tell()
        except _ZIP_ERRORS as err:
            raise self._member_error(fname, _describe(err)) from None
        if read_header is None:
            raise self._member_error(fname, f".npy format version {version} is not read "
                                            "(1.0 and 2.0 are)")
        if dtype.hasobject:
            raise self._error("content", OBJECT_ARRAYS)
        if any(d < 0 for d in shape):
            raise self._member_error(fname, f"negative dimension in shape {shape}")
        if dtype.itemsize == 0:
            raise self._member_error(fname, f"dtype {dtype} has no size")
        shape = tuple(int(d) for d in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes != info.file_size:
            raise self._member_error(fname, f"its header declares shape {shape} of {dtype} "
                                            f"({nbytes} bytes of data) but its zip entry "
                                            f"holds {info.file_size - offset}")
        return Header(name, shape, dtype, bool(fortran), offset, nbytes)

    # -- reading --------------------------------------------------------------------------

    @property
    def total_bytes(self) -> int:
        """Sum of the members' uncompressed sizes (what reading all of them reads)."""
        return sum(info.file_size for info in self.infos.values())

    def read(self, name: str) -> np.ndarray:
        """The array of member ``name``: exactly its declared bytes, read in chunks."""
        header, info = self.headers[name], self.infos[name]
        fname = info.filename
        buf = bytearray(header.nbytes)
        view = memoryview(buf)
        try:
            with self._open_member(info) as f:
                if len(f.read(header.offset)) != header.offset:
                    raise EOFError("truncated header")
                pos = 0
                while pos < header.nbytes:
                    chunk = f.read(min(_CHUNK, header.nbytes - pos))
                    if not chunk:
                        raise EOFError(f"data ends after {pos} of {header.nbytes} bytes")
                    view[pos: pos + len(chunk)] = chunk
                    pos += len(chunk)
            array = np.frombuffer(buf, dtype=header.dtype, count=header.size)
            return array.reshape(header.shape, order="F" if header.fortran_order else "C")
        except _ZIP_ERRORS as err:
            raise self._member_error(fname, _describe(err)) from None
        finally:
            view.release()

    def read_all(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        return {name: self.read(name) for name in (self.headers if names is None else names)}

    # -- closing --------------------------------------------------------------------------

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        self._file.close()

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_members(headers: Mapping[str, Header], schema: Mapping[str, Member],
                  where: object, what: str) -> None:
    """ValueError unless ``headers`` has exactly the members of ``schema`` with their
    dtype kinds and dimensions: missing members first, then unexpected ones."""
    missing = sorted(set(schema) - set(headers))
    if missing:
        raise ValueError(f"{where} is not a {what}: missing {', '.join(missing)}")
    extra = sorted(set(headers) - set(schema))
    if extra:
        raise ValueError(f"{where} is not a {what}: unexpected members {', '.join(extra)}")
    for key, (kinds, ndim) in schema.items():
        h = headers[key]
        if h.dtype.kind not in kinds or len(h.shape) != ndim:
            raise ValueError(f"{where}: array {key!r} has dtype {h.dtype} and {len(h.shape)} "
                             f"dimensions, not what a {what} holds")
