"""Input checks and clean-up for user-supplied text and identifiers."""

from __future__ import annotations

import re
import unicodedata

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
# Bidirectional overrides/isolates can disguise text; they are never needed in a prompt.
_BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
_KEEP = {"\n", "\t"}


def valid_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))


def sanitize_text(text: str) -> str:
    """NFC-normalize, drop control characters (keeping newline and tab) and bidi overrides,
    normalize CRLF, and trim surrounding whitespace."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    cleaned = "".join(
        ch
        for ch in text
        if ch in _KEEP or (unicodedata.category(ch) != "Cc" and ch not in _BIDI_CONTROLS)
    )
    return cleaned.strip()
