"""Values that are well formed but mean nothing, refused at publishing like MISP warninglists.

A hash of the empty file or of a blank image matches every empty upload or blank picture on a
member's platform: shared as abusive, it would flag innocent content by the million. Values are
canonical (see ``signals.types``), so a check is one dictionary look-up (for ``vpdq``, one per
frame).
"""

import json

# The PDQ hash of a solid black image, and what the degenerate all-zero hash looks like: with no
# gradient, no DCT coefficient rises above the median, so every bit is 0. Found with
# python-threatexchange 1.2.17's ``pdq_from_bytes`` (pdqhash 0.2.8, Meta's C++ reference code):
# solid black images of any size and format hash to this, and so do some other blank ones.
BLANK_IMAGE_PDQ = "0" * 64
# A solid white image (RGB, PNG or JPEG, any size from 32x32 to 2000x1000) hashes to this
# rounding noise instead, with quality 0. Other solid colours give other noise, also of quality
# 0: the quality rule below, not this list, is what stops those when quality is given.
WHITE_IMAGE_PDQ = "00001134000011342c4b00002c4b1134000000002c4b2c4b00002c4b8200554b"

EMPTY_FILE_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
EMPTY_FILE_SHA1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
EMPTY_FILE_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# (signal type, canonical value) -> the reason given when it is refused.
WARNINGLIST: dict[tuple[str, str], str] = {
    ("pdq", BLANK_IMAGE_PDQ): "all-zero PDQ hash, the hash of a blank (solid black) image",
    ("pdq", WHITE_IMAGE_PDQ): "PDQ hash of a blank (solid white) image",
    ("md5", EMPTY_FILE_MD5): "MD5 of the empty file",
    ("video_md5", EMPTY_FILE_MD5): "MD5 of the empty file",
    ("sha1", EMPTY_FILE_SHA1): "SHA-1 of the empty file",
    ("sha256", EMPTY_FILE_SHA256): "SHA-256 of the empty file",
}

# Below this PDQ quality (0-100) a hash is too unreliable to match on; python-threatexchange's
# PdqSignal.QUALITY_THRESHOLD draws the line at the same place.
PDQ_MIN_QUALITY = 50


def warninglist_reason(type_name: str, canonical: str) -> str | None:
    """Why ``canonical`` (already canonical for ``type_name``) is refused, or None."""
    if type_name == "vpdq":
        return _vpdq_reason(canonical)
    return WARNINGLIST.get((type_name, canonical))


def _vpdq_reason(canonical: str) -> str | None:
    """A video whose every frame is blank (a blank image's PDQ hash, or below the quality that
    is matched on) matches nothing real and every blank video: refused like a blank image.
    ``canonical`` is the JSON list of "pdq,quality,timestamp" frames signals.types writes."""
    blank = {BLANK_IMAGE_PDQ, WHITE_IMAGE_PDQ}
    for frame in json.loads(canonical):
        pdq, quality, _ = frame.split(",")
        if pdq not in blank and int(quality) >= PDQ_MIN_QUALITY:
            return None
    return "every frame is blank or below quality 50: the vPDQ hash of a blank video"
