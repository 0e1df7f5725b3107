"""The shared page mixins: the sign-in and permission checks run before the view does.

The mixins name `View` among their bases (so the type checker knows ``self.request.user`` is
a signed-in User); this keeps the order that makes that safe: in every routed page's method
resolution order, LoginRequiredMixin and PermissionRequiredMixin come before View, so their
dispatch runs first.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.contrib.auth.mixins import LoginRequiredMixin, PermissionRequiredMixin
from django.urls import URLPattern, URLResolver, get_resolver
from django.views import View

from kmsportal.mixins import PortalPermissionMixin, SignedInMixin


def _view_classes(patterns: list) -> Iterator[type]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _view_classes(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            view_class = getattr(pattern.callback, "view_class", None)
            if view_class is not None:
                yield view_class


def test_checks_come_before_view_dispatch_on_every_page() -> None:
    guarded = [
        cls
        for cls in set(_view_classes(get_resolver().url_patterns))
        if issubclass(cls, PortalPermissionMixin | SignedInMixin)
    ]
    assert len(guarded) >= 40, "too few guarded pages found: the test would prove nothing"
    for cls in guarded:
        mro = cls.__mro__
        assert mro.index(LoginRequiredMixin) < mro.index(View), cls
        if issubclass(cls, PortalPermissionMixin):
            assert mro.index(PermissionRequiredMixin) < mro.index(View), cls
