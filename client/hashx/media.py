"""Hashing files locally (media never leave the machine): MD5 and SHA-256 of any file, and PDQ
with its quality for images through the optional ``pdqhash`` and Pillow packages
(``pip install "hash-exchange-client[media]"``). Values are spelled as python-threatexchange
spells them, so ``hashx hash`` prints its ``<type> <value>`` lines.

Videos get a ``vpdq`` signal (a PDQ hash, quality and timestamp per second of video, in
python-threatexchange's vpdq serialisation): with the ``vpdq`` package (``pip install
"hash-exchange-client[video]"``, built from source against ffmpeg's development libraries:
``apt-get install libavcodec-dev libavformat-dev libswscale-dev libavutil-dev pkg-config``)
when it is installed; otherwise ffmpeg (on the PATH) extracts one frame a second and the media
extra's pdqhash hashes each.
"""

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    if _looks_like_video(path):
        found.insert(0, FileHash(str(path), "vpdq", vpdq_of_video(path)))
        return found
    pdq = pdq_of_image(path)
    if pdq is not None:
        found.insert(0, FileHash(str(path), "pdq", *pdq))
    return found


# The most frames of a vpdq signal an exchange stores or matches (signals.types.MAX_VPDQ_FRAMES):
# an hour at one frame a second.
MAX_VPDQ_FRAMES = 3600
# python-threatexchange's VPDQ_TIMESTAMP_PRECISION.
_TIMESTAMP_DIGITS = 3


def vpdq_value(frames: list[tuple[str, int, float]]) -> str:
    """(PDQ hex, quality, seconds) per frame as python-threatexchange's ``vpdq_to_json``
    writes them."""
    return json.dumps([f"{h},{q},{t:.{_TIMESTAMP_DIGITS}}" for h, q, t in frames])


def vpdq_of_video(path: str | Path, seconds_per_frame: float = 1.0) -> str:
    """The vPDQ signal of a video: one frame every ``seconds_per_frame`` seconds."""
    try:
        import vpdq  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return vpdq_value(_frames_by_ffmpeg(path, seconds_per_frame))
    features: Any = vpdq.computeHash(str(path), seconds_per_hash=seconds_per_frame)
    return vpdq_value([(f.hex, int(f.quality), float(f.timestamp)) for f in features])


def _every(seconds: float) -> str:
    """ffmpeg's filter keeping the first frame and then each frame at least ``seconds`` after
    the last one kept, the frames vpdq hashes (ffmpeg's ``fps`` filter would take the frames
    nearest to the middle of each interval instead)."""
    return f"select='isnan(prev_selected_t)+gte(t-prev_selected_t\\,{seconds - 0.001:g})'"


def _frames_by_ffmpeg(path: str | Path, seconds_per_frame: float) -> list[tuple[str, int, float]]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise MediaExtraMissing(
            f"{path} is a video: vPDQ needs the video extra"
            ' (pip install "hash-exchange-client[video]") or ffmpeg on the PATH'
        )
    with tempfile.TemporaryDirectory(prefix="hashx-frames-") as folder:
        done = subprocess.run(
            [ffmpeg, "-nostdin", "-v", "error", "-i", str(path),
             "-vf", _every(seconds_per_frame), "-vsync", "vfr", f"{folder}/%06d.png"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise OSError(0, f"ffmpeg cannot read it: {done.stderr.strip()[-300:]}")
        frames = []
        for number, image in enumerate(sorted(Path(folder).glob("*.png"))):
            pdq = pdq_of_image(image)
            assert pdq is not None  # ffmpeg wrote it as a PNG
            frames.append((pdq[0], pdq[1], number * seconds_per_frame))
    if not frames:
        raise OSError(0, "no frames in it")
    return frames


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


_VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv"}


def _looks_like_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in _VIDEO_SUFFIXES
