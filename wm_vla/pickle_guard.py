"""Recognise pickle-bearing files before any loader touches them (wm_vla never unpickles).

`torch.save` archives, raw pickles (protocol 2-5, what `pickle.dump`/`torch.save(..., _use_new_zipfile_serialization
=False)`/joblib write) and NumPy `.npy`/`.npz` with object arrays all execute code when loaded. Loaders call
`pickle_kind` on every file they are about to read and raise their package's typed error with `refusal(...)`; the
file's bytes are only sniffed (magic numbers, zip member names), never deserialised.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib")


def pickle_kind(path: str | Path) -> str | None:
    """What kind of pickle-bearing file `path` is ("a Python pickle", "a torch.save archive", ...), else None."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(256)
    except OSError:
        return None  # missing / unreadable: the loader reports that itself
    if _is_safetensors(head, p):  # its 8-byte header length may start with the pickle marker (0x80, 2..5)
        return None
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle"
    if head.startswith(b"\x93NUMPY") and (b"'|O'" in head or b"'O'" in head):
        return "a NumPy array of Python objects (pickled)"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        if any(n.endswith(".pkl") for n in names):
            return "a torch.save archive (a pickle inside a zip)"
    return None


def _is_safetensors(head: bytes, path: Path) -> bool:
    """A safetensors file: a little-endian u64 header length that fits the file, then the JSON header's `{`.
    (A pickle dressed up like this is harmless: it goes to the safetensors parser, which never unpickles.)"""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    try:
        return int.from_bytes(head[:8], "little") <= path.stat().st_size - 8
    except OSError:
        return False


def refusal(path: str | Path, kind: str, expected: str) -> str:
    """The message a loader raises for a pickle-bearing `path` where it expected `expected`."""
    return (f"{path} is {kind}, not {expected}: refused (wm_vla never unpickles, loading it could run arbitrary "
            f"code); convert it to {expected} with a trusted tool")


def pickled_siblings(directory: str | Path) -> list[str]:
    """Names of files in `directory` with a pickle suffix (.pt, .bin, .pkl, ...), for 'found X instead' hints."""
    d = Path(directory)
    return sorted(f.name for f in d.iterdir() if f.suffix in PICKLE_SUFFIXES) if d.is_dir() else []
