"""Bidirectional-text controls never reach a page as themselves (text spoofing).

U+202E (RIGHT-TO-LEFT OVERRIDE) and its relatives reorder what follows them on screen: a key
description `invoice\u202etxt.exe` displays as `invoiceexe.txt`. Whatever a user typed
(descriptions, names, subjects, SANs, audit details) the portal shows it with each such
control replaced by a visible marker like `[U+202E]`, so what is read is what is stored.

`BidiNeutralizeMiddleware` applies it to every HTML page after rendering: one place covers
every template and every field, including the ones added later. JSON and files are left
alone (a client gets the stored bytes).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

#: Embeddings, overrides, isolates and the implicit marks (Unicode UAX #9).
BIDI_CONTROLS = (
    "\u061c",  # ARABIC LETTER MARK
    "\u200e",  # LEFT-TO-RIGHT MARK
    "\u200f",  # RIGHT-TO-LEFT MARK
    "\u202a",  # LEFT-TO-RIGHT EMBEDDING
    "\u202b",  # RIGHT-TO-LEFT EMBEDDING
    "\u202c",  # POP DIRECTIONAL FORMATTING
    "\u202d",  # LEFT-TO-RIGHT OVERRIDE
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u2066",  # LEFT-TO-RIGHT ISOLATE
    "\u2067",  # RIGHT-TO-LEFT ISOLATE
    "\u2068",  # FIRST STRONG ISOLATE
    "\u2069",  # POP DIRECTIONAL ISOLATE
)
_TABLE = {ord(c): f"[U+{ord(c):04X}]" for c in BIDI_CONTROLS}
_ENCODED = tuple(c.encode("utf-8") for c in BIDI_CONTROLS)


def bidi_neutralize(text: str) -> str:
    """``text`` with every bidi control replaced by a visible ``[U+XXXX]``."""
    return text.translate(_TABLE)


class BidiNeutralizeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            not response.streaming
            and response.get("Content-Type", "").startswith("text/html")
            and any(code in response.content for code in _ENCODED)
        ):
            charset = response.charset or "utf-8"
            response.content = bidi_neutralize(response.content.decode(charset)).encode(charset)
        return response
