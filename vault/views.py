"""Vault pages: list, detail, create, lifecycle actions behind confirmation, approvals.

Views parse input, check permissions, call one service and render. Key material never
reaches a view: only fingerprints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from kmsportal.list_pages import filtered_list_page
from kmsportal.mixins import AuthenticatedRequest, PortalPermissionMixin
from kmsportal.views_errors import KMSError, refusal_flash, refusal_on_form

from . import approvals, key_import, selectors, services
from .forms import (
    CompromiseForm,
    DestructionRequestForm,
    ExportPolicyForm,
    KeyCreateForm,
    KeyFilterForm,
    KeyImportForm,
    KeyImportParametersForm,
    RotateForm,
)
from .lifecycle import KeyAction, allowed_actions
from .models import SymmetricKey


class KeyListView(PortalPermissionMixin, View):
    permission_required = "vault.view_symmetrickey"

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return filtered_list_page(
            request,
            "vault/key_list.html",
            KeyFilterForm(request.GET),
            lambda data: selectors.symmetric_key_page(
                user=request.user,
                state=data["state"],
                search=data["q"],
                overdue=data["overdue"],
                due_within_days=data["due_within"],
                after=data["after"],
            ),
        )


@method_decorator(never_cache, name="dispatch")
class KeyCreateView(PortalPermissionMixin, View):
    permission_required = "vault.add_symmetrickey"

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return render(request, "vault/key_create.html", {"form": KeyCreateForm()})

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        form = KeyCreateForm(request.POST)
        if form.is_valid():
            try:
                key = services.symmetric_key_create(actor=request.user, **form.cleaned_data)
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                messages.success(request, f"Key {key.name} created ({key.get_state_display()}).")
                return HttpResponseRedirect(reverse("vault:key_detail", args=[key.name]))
        return render(request, "vault/key_create.html", {"form": form}, status=400)


def _key_or_404(request: AuthenticatedRequest, name: str) -> SymmetricKey:
    key = selectors.symmetric_key_get(user=request.user, name=name)
    if key is None:
        raise Http404("No such key.")
    return key


@dataclass(frozen=True)
class ActionSpec:
    """One lifecycle action offered on the key page, behind a confirmation page."""

    slug: str
    lifecycle: KeyAction
    permission: str
    title: str
    explanation: str
    form: type[forms.Form] | None
    perform: Callable[..., Any]
    danger: bool = False


def _compromise(
    *,
    actor: Any,
    key: SymmetricKey,
    scope: str,
    version: int | None,
    reason: str,
    compromised_at: Any,
) -> str:
    if scope == "key":
        services.symmetric_key_compromise(
            actor=actor, key=key, reason=reason, compromised_at=compromised_at
        )
        return f"Key {key.name} is now compromised; none of its versions will be used again."
    assert version is not None  # CompromiseForm requires one unless the whole key is meant
    replacement = services.key_version_compromise(
        actor=actor, key=key, number=version, reason=reason, compromised_at=compromised_at
    )
    if replacement:
        return (
            f"Version {version} is compromised; version {replacement.number} "
            f"(fingerprint {replacement.fingerprint}) is the new primary."
        )
    return f"Version {version} is compromised and will never be used again."


def _verify(*, actor: Any, key: SymmetricKey) -> str:
    results = services.key_material_verify(actor=actor, key=key)
    return f"Integrity check passed for {len(results)} version(s): every fingerprint matches."


def _rotate(*, actor: Any, key: SymmetricKey, min_decryption_version: int | None) -> str:
    version = services.symmetric_key_rotate(
        actor=actor, key=key, min_decryption_version=min_decryption_version
    )
    return f"Rotated: version {version.number} (fingerprint {version.fingerprint}) is primary."


def _request_destruction(*, actor: Any, key: SymmetricKey, waiting_days: int, reason: str) -> str:
    services.destruction_request_create(
        actor=actor, key=key, waiting_days=waiting_days, reason=reason
    )
    return (
        "Destruction requested. A different key custodian must approve it within 24 hours, "
        "on its confirmation page (Approvals)."
    )


def _simple(service: Callable[..., Any], message: str) -> Callable[..., str]:
    def perform(*, actor: Any, key: SymmetricKey) -> str:
        service(actor=actor, key=key)
        return message.format(name=key.name)

    return perform


ACTIONS: dict[str, ActionSpec] = {
    spec.slug: spec
    for spec in [
        ActionSpec(
            "activate",
            KeyAction.ACTIVATE,
            "vault.suspend_symmetrickey",
            "Activate",
            "The key becomes usable now: its first version can encrypt and be distributed.",
            None,
            _simple(services.symmetric_key_activate, "{name} is active."),
        ),
        ActionSpec(
            "rotate",
            KeyAction.ROTATE,
            "vault.rotate_symmetrickey",
            "Rotate",
            "A new version with fresh material becomes primary. The current primary stays "
            "usable for decryption only. Optionally move the minimum decryption version "
            "forward to retire old versions.",
            RotateForm,
            _rotate,
        ),
        ActionSpec(
            "suspend",
            KeyAction.SUSPEND,
            "vault.suspend_symmetrickey",
            "Suspend",
            "No version of this key can be used or distributed until it is resumed.",
            None,
            _simple(services.symmetric_key_suspend, "{name} is suspended."),
        ),
        ActionSpec(
            "resume",
            KeyAction.RESUME,
            "vault.suspend_symmetrickey",
            "Resume",
            "The key becomes usable again.",
            None,
            _simple(services.symmetric_key_resume, "{name} is active again."),
        ),
        ActionSpec(
            "deactivate",
            KeyAction.DEACTIVATE,
            "vault.suspend_symmetrickey",
            "Deactivate",
            "The key stops protecting new data for good: no rotation, no new encryption. "
            "Its versions can still decrypt existing data.",
            None,
            _simple(services.symmetric_key_deactivate, "{name} is deactivated."),
            danger=True,
        ),
        ActionSpec(
            "compromise",
            KeyAction.COMPROMISE_VERSION,
            "vault.compromise_symmetrickey",
            "Report compromised",
            "Compromised material is never distributed or used again, and this cannot be "
            "undone. If the primary version is compromised, a fresh version becomes primary "
            "at once. Clients that received it are listed on the key page.",
            CompromiseForm,
            _compromise,
            danger=True,
        ),
        ActionSpec(
            "destroy",
            KeyAction.REQUEST_DESTRUCTION,
            "vault.destroy_symmetrickey",
            "Request destruction",
            "Destruction needs a second key custodian's approval within 24 hours. Once "
            "approved the key is unusable; after the waiting period its material is erased "
            "for good. Metadata and the audit trail stay.",
            DestructionRequestForm,
            _request_destruction,
            danger=True,
        ),
        ActionSpec(
            "cancel-destruction",
            KeyAction.CANCEL_DESTRUCTION,
            "vault.destroy_symmetrickey",
            "Cancel destruction",
            "The scheduled destruction is cancelled and the key returns to its earlier state.",
            None,
            _simple(services.symmetric_key_destruction_cancel, "Destruction of {name} cancelled."),
        ),
    ]
}
VERIFY = ActionSpec(
    "verify",
    KeyAction.ROTATE,
    "vault.rotate_symmetrickey",
    "Check integrity",
    "Every stored version is unsealed in memory and its fingerprint compared with the one "
    "recorded at creation. Nothing is shown or changed; the check is audited.",
    None,
    _verify,
)


def _export_policy(*, actor: Any, key: SymmetricKey, policy: str, reason: str) -> str:
    outcome = approvals.export_policy_set(actor=actor, key=key, policy=policy, reason=reason)
    if outcome.request is not None:
        return (
            f"A weaker export policy ('{policy}') waits for a second key custodian's approval "
            "(Approvals)."
        )
    withdrawn = (
        f" {outcome.grants_withdrawn} live grant(s) were withdrawn."
        if outcome.grants_withdrawn
        else ""
    )
    return f"The export policy of {key.name} is now '{policy}'.{withdrawn}"


EXPORT_POLICY = ActionSpec(
    "export-policy",
    KeyAction.ROTATE,
    "vault.export_policy_symmetrickey",
    "Change export policy",
    "Who must agree before a client may fetch this key. 'never': no client can be granted it "
    "(choosing it withdraws the live grants); 'two-person' (the default): every grant waits "
    "for a second key custodian; 'single': one custodian grants alone, for keys of low "
    "sensitivity only. A stricter policy applies at once; a weaker one waits for a second "
    "key custodian's approval.",
    ExportPolicyForm,
    _export_policy,
    danger=True,
)


def available_actions(user: Any, key: SymmetricKey) -> list[ActionSpec]:
    """Actions the key's state allows and the user's permissions grant."""
    allowed = set(allowed_actions(key.state))
    # Compromising one version is offered when the key allows it; compromising the whole
    # key is allowed from more states (pre-active), which the form's service call checks.
    allowed_slugs = [
        spec
        for spec in ACTIONS.values()
        if (
            spec.lifecycle in allowed
            or (spec.slug == "compromise" and KeyAction.COMPROMISE_KEY in allowed)
        )
        and user.has_perm(spec.permission)
    ]
    if not key.is_destroyed and user.has_perm(VERIFY.permission):
        allowed_slugs.append(VERIFY)
    if not key.is_destroyed and user.has_perm(EXPORT_POLICY.permission):
        allowed_slugs.append(EXPORT_POLICY)
    return allowed_slugs


class KeyDetailView(PortalPermissionMixin, View):
    permission_required = "vault.view_symmetrickey"

    def get(self, request: AuthenticatedRequest, name: str) -> HttpResponse:
        key = _key_or_404(request, name)
        versions = selectors.key_versions(key=key)
        return render(
            request,
            "vault/key_detail.html",
            {
                "key": key,
                "versions": versions,
                "any_compromised": any(v.compromised_at for v in versions),
                "timeline": selectors.key_timeline(key=key),
                "impact": selectors.key_compromise_impact(key=key),
                "custody": selectors.key_custody(),
                "actions": available_actions(request.user, key),
                "pending_requests": [
                    r
                    for r in selectors.destruction_requests_pending(user=request.user)
                    if r.key_id == key.pk
                ],
                "other_requests": selectors.key_requests_pending(user=request.user, key=key),
            },
        )


@method_decorator(never_cache, name="dispatch")
class KeyActionView(PortalPermissionMixin, View):
    """GET: a confirmation page saying what will happen. POST: do it."""

    permission_required = "vault.view_symmetrickey"

    def spec(self, slug: str) -> ActionSpec:
        spec = {VERIFY.slug: VERIFY, EXPORT_POLICY.slug: EXPORT_POLICY}.get(slug) or ACTIONS.get(
            slug
        )
        if spec is None:
            raise Http404("No such action.")
        if not self.request.user.has_perm(spec.permission):
            raise PermissionDenied(f"{spec.title} needs the {spec.permission} permission")
        return spec

    def _render(
        self,
        request: AuthenticatedRequest,
        key: SymmetricKey,
        spec: ActionSpec,
        form: forms.Form | None,
        status: int = 200,
    ) -> HttpResponse:
        return render(
            request,
            "vault/key_action.html",
            {"key": key, "spec": spec, "form": form, "versions": selectors.key_versions(key=key)},
            status=status,
        )

    def get(self, request: AuthenticatedRequest, name: str, slug: str) -> HttpResponse:
        spec = self.spec(slug)
        key = _key_or_404(request, name)
        return self._render(request, key, spec, spec.form() if spec.form else None)

    def post(self, request: AuthenticatedRequest, name: str, slug: str) -> HttpResponse:
        spec = self.spec(slug)
        key = _key_or_404(request, name)
        form = spec.form(request.POST) if spec.form else None
        if form is not None and not form.is_valid():
            return self._render(request, key, spec, form, status=400)
        try:
            message = spec.perform(
                actor=request.user, key=key, **(form.cleaned_data if form else {})
            )
        except services.KeyIntegrityError as exc:  # shown on the key page, not the form
            refusal_flash(request, exc)
            return HttpResponseRedirect(reverse("vault:key_detail", args=[key.name]))
        except KMSError as exc:
            form = refusal_on_form(form, exc)
            return self._render(request, key, spec, form, status=400)
        messages.success(request, message)
        return HttpResponseRedirect(reverse("vault:key_detail", args=[key.name]))


class ApprovalInboxView(PortalPermissionMixin, View):
    permission_required = "vault.view_destructionrequest"

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return render(
            request,
            "vault/approvals.html",
            {"requests": selectors.destruction_requests_pending(user=request.user)},
        )


class ApprovalDecisionView(PortalPermissionMixin, View):
    """POST reject (the requester's reject is a withdrawal). An old "approve" link only
    leads to the confirmation page, which alone approves (it shows what is destroyed and who
    loses the key): nothing changes here."""

    permission_required = "vault.destroy_symmetrickey"
    http_method_names = ["post"]

    def post(self, request: AuthenticatedRequest, pk: int, decision: str) -> HttpResponse:
        destruction = selectors.destruction_request_get(user=request.user, pk=pk)
        if destruction is None or decision not in ("approve", "reject"):
            raise Http404("No such request.")
        if decision == "approve":
            messages.info(
                request, "Nothing was approved: read what approving changes, then decide here."
            )
            return HttpResponseRedirect(reverse("approvals:confirm", args=["destruction", pk]))
        try:
            done = services.destruction_request_reject(actor=request.user, request=destruction)
            messages.success(request, f"Request {done.get_status_display()}.")
        except KMSError as exc:
            refusal_flash(request, exc)
        return HttpResponseRedirect(reverse("vault:approvals"))


# --- bring your own key -------------------------------------------------------------------


@method_decorator(never_cache, name="dispatch")
class KeyImportParametersView(PortalPermissionMixin, View):
    """Step 1 of an import: a one-time wrapping key and import token (shown once)."""

    permission_required = ("vault.add_symmetrickey", "vault.rotate_symmetrickey")

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        return render(
            request, "vault/key_import_parameters.html", {"form": KeyImportParametersForm()}
        )

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        form = KeyImportParametersForm(request.POST)
        if form.is_valid():
            try:
                parameters = key_import.key_import_parameters_create(
                    actor=request.user,
                    key_name=form.cleaned_data["name"],
                    key_size=form.cleaned_data["key_size"],
                )
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                return render(
                    request,
                    "vault/key_import_token.html",
                    {"parameters": parameters, "record": parameters.record},
                )
        return render(request, "vault/key_import_parameters.html", {"form": form}, status=400)


@method_decorator(never_cache, name="dispatch")
@method_decorator(sensitive_post_parameters("import_token"), name="dispatch")
class KeyImportView(PortalPermissionMixin, View):
    """Step 2: upload the wrapped material with the import token."""

    permission_required = ("vault.add_symmetrickey", "vault.rotate_symmetrickey")

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        form = KeyImportForm(initial={"name": request.GET.get("name", "")})
        return render(request, "vault/key_import.html", {"form": form})

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        form = KeyImportForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data["wrapped_key"]
            wrapped = upload.read(key_import.WRAPPED_MAX_BYTES + 1)
            try:
                version = key_import.key_import(
                    actor=request.user,
                    key_name=form.cleaned_data["name"],
                    wrapped=wrapped,
                    import_token=form.cleaned_data["import_token"],
                )
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                messages.success(
                    request,
                    f"Imported version {version.number} of {form.cleaned_data['name']} "
                    f"(origin external), fingerprint {version.fingerprint}.",
                )
                return HttpResponseRedirect(
                    reverse("vault:key_detail", args=[form.cleaned_data["name"]])
                )
        return render(request, "vault/key_import.html", {"form": form}, status=400)
