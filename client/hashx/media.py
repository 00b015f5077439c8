"""Hashing files locally (media never leave the machine): MD5 and SHA-256 of any file, and PDQ
with its quality for images through the optional ``pdqhash`` and Pillow packages
(``pip install "hash-exchange-client[media]"``). Values are spelled as python-threatexchange
spells them, so ``hashx hash`` prints its ``<type> <value>`` lines."""

import hashlib
from dataclasses import dataclass
from pathlib import Path


class MediaExtraMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class FileHash:
    path: str
    type: str
    value: str
    quality: int | None = None


def file_hashes(path: str | Path) -> list[FileHash]:
    """MD5 and SHA-256 of the file, then its PDQ hash and quality if it is an image and the
    media extra is installed (an image without the extra raises ``MediaExtraMissing``)."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with Path(path).open("rb") as body:
        for chunk in iter(lambda: body.read(1 << 20), b""):
            md5.update(chunk)
            sha256.update(chunk)
    found = [FileHash(str(path), "md5", md5.hexdigest()),
             FileHash(str(path), "sha256", sha256.hexdigest())]  # fmt: skip
    pdq = pdq_of_image(path)
    if pdq is not None:
        found.insert(0, FileHash(str(path), "pdq", *pdq))
    return found


def pdq_of_image(path: str | Path) -> tuple[str, int] | None:
    """(PDQ hex, quality 0-100) of an image; None when the file is not an image."""
    try:
        import numpy as np
        import pdqhash  # type: ignore[import-untyped,import-not-found,unused-ignore]
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        if _looks_like_image(path):
            raise MediaExtraMissing(
                f"{path} is an image: PDQ needs the media extra"
                ' (pip install "hash-exchange-client[media]")'
            ) from None
        return None
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError):
        return None
    vector, quality = pdqhash.compute(pixels)
    bits = "".join(str(int(b)) for b in vector)
    return f"{int(bits, 2):064x}", int(quality)


_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def _looks_like_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in _IMAGE_SUFFIXES
