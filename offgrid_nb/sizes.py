"""Byte sizes as people write them ("4GB", "500 MB", "1.5GiB") and as we print them."""

from __future__ import annotations

import re

from .errors import InvalidArgumentError

_UNITS = {
    "": 1, "B": 1,
    "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
    "T": 10**12, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(value: str | int | float) -> int:
    """Bytes from ``4GB`` / ``500MB`` / ``1.5GiB`` / a plain number (decimal units, like the Hub).

    Raises:
        InvalidArgumentError: the text is not a non-negative size.
    """
    if isinstance(value, bool):
        raise InvalidArgumentError(f"Invalid size: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise InvalidArgumentError(f"Invalid size: {value} (must not be negative)")
        return int(value)
    match = _SIZE.match(value)
    unit = match.group(2).upper() if match else None
    if not match or unit not in _UNITS:
        raise InvalidArgumentError(
            f"Invalid size: {value!r}", hint="write it like 4GB, 500MB or 1.5GiB"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(n_bytes: int | float | None) -> str:
    """``3.8 GB``-style text in decimal units (as the Hub shows sizes); ``?`` when unknown."""
    if n_bytes is None:
        return "?"
    for unit, factor in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n_bytes >= factor:
            return f"{n_bytes / factor:.1f} {unit}"
    return f"{int(n_bytes)} B"
