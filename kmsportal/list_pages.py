"""A filtered list page: the one shape of the key, certificate and audit event lists.

The filter form is read from the query string; an invalid one answers 400 with the form and
its errors (no rows); a valid one asks the selector for one page and passes on the query
without its paging cursors (``filter_query``), so that the paging links keep the filters.
The template includes ``includes/list_filter.html`` for the form.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

__all__ = ["filtered_list_page"]


def filtered_list_page(
    request: HttpRequest,
    template: str,
    form: forms.Form,
    page_for: Callable[[dict[str, Any]], Any],
    cursors: Iterable[str] = ("after",),
) -> HttpResponse:
    """Render ``template`` with ``form``, the ``page`` ``page_for(cleaned_data)`` returns and
    ``filter_query`` (the query string without the ``cursors``)."""
    if not form.is_valid():
        return render(request, template, {"form": form, "page": None}, status=400)
    page = page_for(form.cleaned_data)
    query = request.GET.copy()
    for name in cursors:
        query.pop(name, None)
    return render(
        request, template, {"form": form, "page": page, "filter_query": query.urlencode()}
    )
