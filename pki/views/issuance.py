"""Issuance from a CSR and with a generated key pair, each behind a confirmation page; the
generated key is delivered once, inside the encrypted PKCS#12."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from django import forms
from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from kmsportal.mixins import AuthenticatedRequest, PortalPermissionMixin
from kmsportal.views_errors import KMSError, refusal_on_form

from .. import selectors, services
from ..forms import (
    CSRRequestForm,
    CSRReviewForm,
    GeneratedIssueForm,
    GeneratedRequestForm,
)
from ..generated_delivery import (
    generated_key_delivery_get,
    generated_key_download,
    generated_key_issue_once,
)
from ..models import CertificateAuthority
from .common import (
    ISSUE,
    ca_or_404,
    download,
    hide,
)

# --- issuance --------------------------------------------------------------------------------


class _IssueMixin(PortalPermissionMixin):
    permission_required = ISSUE

    def choices(self) -> dict[str, list[tuple[str, str]]]:
        return {
            "cas": selectors.ca_issuing_choices(user=self.request.user),
            "profiles": selectors.profile_choices(),
        }

    def issuing_ca(self, form: forms.Form) -> CertificateAuthority:
        return ca_or_404(self.request, form.cleaned_data["ca"])


CSR_REVIEW_CARRIED = ("csr_pem", "ca", "profile", "days")


@method_decorator(never_cache, name="dispatch")
class IssueFromCSRView(_IssueMixin, View):
    """Step ``request``: paste or upload a CSR, choose CA, profile, validity. Step
    ``review``: the confirmation page shows exactly what will be signed; subject and SANs
    can be changed there (which shows the page again). Step ``issue``: sign."""

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        form = CSRRequestForm(initial={"ca": request.GET.get("ca", "")}, **self.choices())
        return render(request, "pki/issue_csr.html", {"form": form})

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        step = request.POST.get("step", "request")
        if step == "request":
            return self.request_step()
        form = CSRReviewForm(request.POST, **self.choices())
        if not form.is_valid():
            return self.review_page(form, None, status=400)
        data = form.cleaned_data
        arguments = {
            "ca": self.issuing_ca(form),
            "csr_pem_or_der": data["csr_pem"].encode("utf-8"),
            "profile": data["profile"],
            "subject_override": data["subject"],
            "sans_override": data["san_lines"],
            "days": data["days"],
        }
        try:
            if step == "issue":
                certificate = services.certificate_issue_from_csr(actor=request.user, **arguments)
                messages.success(
                    request,
                    f"Certificate issued: serial {certificate.serial_number_display} "
                    f"by {certificate.ca.name}.",
                )
                return HttpResponseRedirect(
                    reverse("pki:certificate_detail", args=[certificate.pk])
                )
            preview = services.certificate_csr_preview(**arguments)
        except KMSError as exc:
            refusal_on_form(form, exc)
            return self.review_page(form, None, status=400)
        return self.review_page(self.review_form(preview), preview)

    def request_step(self) -> HttpResponse:
        form = CSRRequestForm(self.request.POST, self.request.FILES, **self.choices())
        if form.is_valid():
            data = form.cleaned_data
            try:
                preview = services.certificate_csr_preview(
                    ca=self.issuing_ca(form),
                    csr_pem_or_der=data["csr_data"],
                    profile=data["profile"],
                    days=data["days"],
                )
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                return self.review_page(self.review_form(preview), preview)
        return render(self.request, "pki/issue_csr.html", {"form": form}, status=400)

    def review_form(self, preview: services.IssuePreview) -> CSRReviewForm:
        return CSRReviewForm(
            {
                "csr_pem": preview.csr_pem,
                "ca": preview.ca.name,
                "profile": preview.profile,
                "days": preview.days or "",
                "subject": preview.subject,
                "sans": "\n".join(preview.sans),
            },
            **self.choices(),
        )

    def review_page(
        self, form: CSRReviewForm, preview: services.IssuePreview | None, status: int = 200
    ) -> HttpResponse:
        """The confirmation page: what will be signed, the issue button (every value in
        hidden fields, exactly as shown) and the form to change subject or SANs."""
        issue_form = None
        if preview is not None:
            issue_form = hide(
                CSRReviewForm(form.data, **self.choices(), auto_id="issue_%s"),
                *CSR_REVIEW_CARRIED,
                "subject",
                "sans",
            )
        return render(
            self.request,
            "pki/issue_csr_confirm.html",
            {
                "preview": preview,
                "issue_form": issue_form,
                "edit_form": hide(form, *CSR_REVIEW_CARRIED),
            },
            status=status,
        )


GENERATED_CARRIED = ("ca", "profile", "subject", "sans", "key_type", "days")


@method_decorator(never_cache, name="dispatch")
@method_decorator(sensitive_post_parameters("password1", "password2"), name="dispatch")
class IssueGeneratedView(_IssueMixin, View):
    """Step ``request``: the certificate's content. Step ``confirm`` (the confirmation page)
    shows what will be signed and asks for the password twice; its POST answers with the
    PKCS#12 (or PEM bundle) itself, once, never cached. Nothing of the key is kept."""

    def get(self, request: AuthenticatedRequest) -> HttpResponse:
        form = GeneratedRequestForm(initial={"ca": request.GET.get("ca", "")}, **self.choices())
        return render(request, "pki/issue_generated.html", {"form": form})

    def post(self, request: AuthenticatedRequest) -> HttpResponse:
        if request.POST.get("step") == "issue":
            return self.issue_step()
        form = GeneratedRequestForm(request.POST, **self.choices())
        if form.is_valid():
            try:
                preview = self.preview(form)
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                carried = {name: request.POST.get(name, "") for name in GENERATED_CARRIED}
                carried["idempotency_token"] = secrets.token_urlsafe(24)
                return self.confirm_page(self.issue_form(initial=carried), preview)
        return render(request, "pki/issue_generated.html", {"form": form}, status=400)

    def preview(self, form: forms.Form) -> services.IssuePreview:
        data = form.cleaned_data
        return services.certificate_generated_preview(
            ca=self.issuing_ca(form),
            subject=data["subject"],
            sans=data["san_lines"],
            profile=data["profile"],
            days=data["days"],
            key_type=data["key_type"],
        )

    def issue_form(
        self, data: Any = None, initial: dict[str, str] | None = None
    ) -> GeneratedIssueForm:
        """The confirmation page's form: the content travels hidden, the password is asked."""
        form = GeneratedIssueForm(data, initial=initial, **self.choices())
        return hide(form, *GENERATED_CARRIED)

    def confirm_page(
        self, form: GeneratedIssueForm, preview: services.IssuePreview | None, status: int = 200
    ) -> HttpResponse:
        return render(
            self.request,
            "pki/issue_generated_confirm.html",
            {"form": form, "preview": preview},
            status=status,
        )

    def issue_step(self) -> HttpResponse:
        form = self.issue_form(self.request.POST)
        preview = None
        if form.is_valid():
            data = form.cleaned_data
            try:
                submission = generated_key_issue_once(
                    actor=self.request.user,
                    token=data["idempotency_token"],
                    ca=self.issuing_ca(form),
                    subject=data["subject"],
                    sans=data["san_lines"],
                    profile=data["profile"],
                    days=data["days"],
                    key_type=data["key_type"],
                    pkcs12_password=data["password1"],
                    pem_bundle=data["delivery"] == "pem",
                )
            except KMSError as exc:
                refusal_on_form(form, exc)
            else:
                if not submission.issued_now:
                    messages.info(
                        self.request,
                        "This form was already submitted: nothing was issued again.",
                    )
                # Post/Redirect/Get: a reload shows the result, never submits again.
                return HttpResponseRedirect(
                    reverse("pki:issue_generated_result", args=[submission.delivery.pk])
                )
        try:
            # Show what would be signed again next to the errors, if it can still be built.
            check = GeneratedRequestForm(self.request.POST, **self.choices())
            preview = self.preview(check) if check.is_valid() else None
        except KMSError:
            preview = None
        # The passwords are never sent back into the page.
        return self.confirm_page(form, preview, status=400)


@method_decorator(never_cache, name="dispatch")
class IssueGeneratedResultView(PortalPermissionMixin, View):
    """After generated-key issuance: serial, link, and the one download (POST, so that no
    link prefetcher can spend it). Only the operator who issued sees it."""

    permission_required = ISSUE

    def get(self, request: AuthenticatedRequest, delivery_id: uuid.UUID) -> HttpResponse:
        return self.page(delivery_id)

    def post(self, request: AuthenticatedRequest, delivery_id: uuid.UUID) -> HttpResponse:
        delivered = generated_key_download(user=request.user, delivery_id=delivery_id)
        if delivered is None:
            messages.error(
                request,
                "The file was already downloaded or has expired: it is offered once. Issue a "
                "new certificate if the file is lost.",
            )
            return self.page(delivery_id, status=410)
        return download(
            delivered.content, content_type=delivered.content_type, filename=delivered.filename
        )

    def page(self, delivery_id: uuid.UUID, status: int = 200) -> HttpResponse:
        delivery = generated_key_delivery_get(user=self.request.user, delivery_id=delivery_id)
        if delivery is None:
            raise Http404("no such issuance")
        return render(
            self.request, "pki/issue_generated_result.html", {"delivery": delivery}, status=status
        )
