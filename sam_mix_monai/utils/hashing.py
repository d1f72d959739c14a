"""File checksums (weights shipped in packages are checked by SHA-256 before they are loaded)."""

from __future__ import annotations

import hashlib

from sam_mix_monai.utils.errors import PathLike

__all__ = ["file_sha256"]


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
