"""Rendering the one root of the errors this project tells a person or a program about.

Every refusal a user can cause is a :class:`KMSError` (``kmsportal.crypto.errors``, or a subclass): it carries a stable
machine-readable ``code`` (the last segment of the problem document's ``type``), the HTTP
``status`` it maps to, and a ``message`` written for the person who caused it (what went wrong
and what to do). Each surface maps it in one place:

* JSON APIs: :func:`problem_response` (RFC 9457 ``application/problem+json``);
* portal pages: the message goes on the form or the page, the status on the response;
* command-line tools: the message on standard error, a non-zero exit.

Code that raises does not know which surface will show the error; code that shows it does
not inspect the class beyond these three attributes.
"""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

from kmsportal.crypto.errors import KMSError

__all__ = [
    "PROBLEM_BASE",
    "KMSError",
    "problem_document",
    "problem_document_for",
    "problem_for",
    "problem_response",
]

# Problem types are URIs (RFC 9457 §3.1.1); ".invalid" says they are identifiers, not pages.
PROBLEM_BASE = "https://kmsportal.invalid/problems/"


def problem_document(code: str, detail: str, status: int, **extra: Any) -> dict[str, Any]:
    """An RFC 9457 problem document; ``extra`` members (e.g. field errors) are added as is."""
    return {
        "type": PROBLEM_BASE + code,
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }


def problem_response(
    code: str, detail: str, status: int, *, retry_after: int | None = None, **extra: Any
) -> JsonResponse:
    response = JsonResponse(
        problem_document(code, detail, status, **extra),
        status=status,
        content_type="application/problem+json",
    )
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def problem_document_for(exc: KMSError, **extra: Any) -> dict[str, Any]:
    """The problem document (a dict) for a :class:`KMSError`, e.g. to seal into an answer."""
    return problem_document(exc.code, exc.message, exc.status, **extra)


def problem_for(exc: KMSError, **extra: Any) -> JsonResponse:
    """The problem response for a :class:`KMSError`; a refusal that says when to try again
    (``retry_after``, seconds) sends it as ``Retry-After``."""
    retry_after: int | None = getattr(exc, "retry_after", None)
    return problem_response(exc.code, exc.message, exc.status, retry_after=retry_after, **extra)
