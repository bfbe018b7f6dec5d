"""Names that become file names (image ids, label tags, versions): one rule for all of them, so that
nothing a request names can reach outside its folder."""

from __future__ import annotations

import unicodedata

from universal.errors import UniversalError

MAX_NAME_BYTES = 200  # file systems hold names of 255 bytes; room is left for a suffix (".nii.gz", ".saving.json")


def plain_name(value, what: str) -> str:
    """``value`` if it can name a file inside its folder, else a :class:`UniversalError` that names
    ``what`` and the rule: a non-empty text without ``/``, ``\\``, control characters or a leading
    ``.``, at most :data:`MAX_NAME_BYTES` bytes in UTF-8."""
    if not isinstance(value, str) or not value:
        raise UniversalError(f"{what} must be a non-empty name, got {value!r}")
    bad = [c for c in value if c in "/\\" or unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    if bad or value.startswith(".") or value != value.strip():
        raise UniversalError(f"{what} {value!r} is not a plain name: a name holds no '/', '\\' or control "
                             "characters, and starts with neither '.' nor a space")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise UniversalError(f"{what} is {size} bytes long; a name holds at most {MAX_NAME_BYTES} bytes (UTF-8)")
    return value
