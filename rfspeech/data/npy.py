"""Feature files (``.npy``) checked from their header before a byte of data is allocated.

``numpy.load`` trusts the header: a 192-byte file that claims shape ``(80, 10**12)`` makes it try to
allocate 320 GB (a crash or the OOM killer, not an error), and a complex or boolean array passes as a
mel. Here the header is read first and must describe a real floating-point array whose data the file
actually holds; only then is the array read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rfspeech.errors import DataError


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header declares.

    Attributes:
        shape: array shape.
        dtype: element type.
        fortran_order: column-major data.
        data_offset: byte offset of the data in the file.
        file_size: size of the file in bytes.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int
    file_size: int


def read_header(path: str | os.PathLike[str]) -> NpyHeader:
    """Read and sanity-check a ``.npy`` header (not the data).

    Raises:
        DataError: missing file, not a ``.npy`` file, an object (pickled) array, or a declared data size
            the file does not hold (e.g. a truncated file, or a forged shape).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=10_000)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=10_000)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except FileNotFoundError:
        raise DataError(f"{path}: feature file not found") from None
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as e:
        raise DataError(f"{path}: unreadable features, not a .npy file ({e.__class__.__name__}: {_short(e)})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: holds Python objects (dtype {dtype}), not numbers; refused (no pickles)")
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise DataError(f"{path}: invalid shape {shape} in the .npy header")
    need = math.prod(shape) * dtype.itemsize
    have = size - offset
    if need > have:
        raise DataError(f"{path}: header declares shape {shape} of {dtype} ({need} bytes) but the file holds "
                        f"{have} bytes of data (truncated or forged)")
    return NpyHeader(tuple(shape), dtype, bool(fortran), offset, size)


def check_features_header(path: str | os.PathLike[str], n_mels: int | None = None) -> NpyHeader:
    """Header of a log-mel file: ``(n_mels, frames)`` of a real floating-point type, data present.

    Raises:
        DataError: see :func:`read_header`; a non-float (complex, bool, integer) dtype; not 2-D or
            another number of mel bins than ``n_mels``.
    """
    h = read_header(path)
    if h.dtype.kind != "f":
        raise DataError(f"{path}: features of dtype {h.dtype}, expected real floating point (float32)")
    if len(h.shape) != 2 or (n_mels is not None and h.shape[0] != n_mels):
        raise DataError(f"{path}: expected features of shape ({n_mels if n_mels else 'n_mels'}, frames), got {h.shape}")
    return h


def load_features(path: str | os.PathLike[str], n_mels: int | None = None) -> np.ndarray:
    """Load a log-mel ``.npy`` as float32 ``(n_mels, frames)`` after :func:`check_features_header`.

    Raises:
        DataError: anything :func:`check_features_header` refuses, or data numpy cannot read.
    """
    check_features_header(path, n_mels)
    try:
        mel = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: unreadable features ({e.__class__.__name__}: {_short(e)})") from None
    return mel.astype(np.float32, copy=False)


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:120] or e.__class__.__name__
