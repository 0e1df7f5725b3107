"""How a portal page shows what the domain refused: the one place pages map a :class:`KMSError`.

A view calls one service inside ``try`` and catches the root, ``KMSError``; what it does
with the error is one of two things, both here:

* a page with a form shows ``exc.message`` as the form's error (:func:`refusal_on_form`);
  the page answers with the refusal's status (400: the form cannot be accepted as sent);
* an action that redirects (approve, reject, revoke from a list) flashes ``exc.message``
  (:func:`refusal_flash`) and goes back where it came from.

Only refusals (a 4xx ``status``) are the user's to read and fix. A fault (5xx: the key
store is gone, sealed material does not open) is raised on, to the page that says so
(``kmsportal.keyring.middleware``: 503) or the 500 page, exactly as if it had not been
caught. A view never inspects the class beyond ``message`` and ``status``.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest

from kmsportal.crypto.errors import KMSError

__all__ = ["KMSError", "refusal_flash", "refusal_on_form"]


def _faults_go_on(exc: KMSError) -> None:
    if exc.status >= 500:
        raise exc


def refusal_on_form(form: forms.Form | None, exc: KMSError) -> forms.Form:
    """``form`` with ``exc.message`` as a non-field error (a bound empty form for an action
    without fields, so that the page shows the error the same way)."""
    _faults_go_on(exc)
    if form is None:
        form = forms.Form({})
        form.is_valid()
    form.add_error(None, exc.message)
    return form


def refusal_flash(request: HttpRequest, exc: KMSError) -> None:
    """Tell the user on the next page what was refused and why."""
    _faults_go_on(exc)
    messages.error(request, exc.message)
