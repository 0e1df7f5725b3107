"""PKI pages: CAs, certificates, issuance behind a confirmation page, validation, and the
public CA certificate download (the AIA caIssuers URL).

Views parse input, check permissions (on every request, GET and POST), call one service or
selector and render. Domain errors become form errors with status 400. Private keys never
reach a view, except the generated one inside the encrypted PKCS#12 it returns once.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from accounts.views import PortalPermissionMixin

from . import selectors, services
from .forms import (
    CACreateForm,
    CADisableForm,
    CertificateFilterForm,
    CSRRequestForm,
    CSRReviewForm,
    GeneratedIssueForm,
    GeneratedRequestForm,
    ValidationForm,
)
from .models import Certificate, CertificateAuthority

VIEW_CA = selectors.VIEW_CA
VIEW_CERTIFICATE = selectors.VIEW_CERTIFICATE
MANAGE_CA = "pki.manage_certificateauthority"
ISSUE = "pki.issue_certificate"

PEM_TYPE = "application/x-pem-file"
DER_CERTIFICATE_TYPE = "application/pkix-cert"
PKCS12_TYPE = "application/x-pkcs12"


def _ca_or_404(request: HttpRequest, name: str) -> CertificateAuthority:
    ca = selectors.ca_get(user=request.user, name=name)
    if ca is None:
        raise Http404("No such certificate authority.")
    return ca


def _certificate_or_404(request: HttpRequest, pk: int) -> Certificate:
    certificate = selectors.certificate_get(user=request.user, pk=pk)
    if certificate is None:
        raise Http404("No such certificate.")
    return certificate


def _download(content: bytes | str, *, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _hide(form: forms.Form, *names: str) -> forms.Form:
    """Carry these fields to the next step unchanged: hidden inputs (checked again there)."""
    for name in names:
        form.fields[name].widget = forms.HiddenInput()
    return form


# --- certificate authorities -----------------------------------------------------------------


class CAListView(PortalPermissionMixin, View):
    permission_required = VIEW_CA

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, "pki/ca_list.html", {"cas": selectors.ca_list(user=request.user)})


class CADetailView(PortalPermissionMixin, View):
    permission_required = VIEW_CA

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        ca = _ca_or_404(request, name)
        return render(request, "pki/ca_detail.html", {"detail": selectors.ca_detail(ca=ca)})


CA_FIELDS = ("name", "subject", "parent", "key_type", "days", "path_length")


@method_decorator(never_cache, name="dispatch")
class CACreateView(PortalPermissionMixin, View):
    """GET: the form. POST: a confirmation page showing the CA certificate that would be
    made; POST with ``confirm=yes`` (from that page): create it."""

    permission_required = MANAGE_CA

    def form(self, data: Any = None) -> CACreateForm:
        return CACreateForm(data, parents=selectors.ca_issuing_choices(user=self.request.user))

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, "pki/ca_create.html", {"form": self.form()})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = self.form(request.POST)
        if not form.is_valid():
            return render(request, "pki/ca_create.html", {"form": form}, status=400)
        data = form.cleaned_data
        parent = None
        if data["parent"]:
            parent = _ca_or_404(request, data["parent"])
        arguments = {
            "name": data["name"],
            "subject": data["subject"],
            "parent": parent,
            "key_type": data["key_type"],
            "days": data["days"],
            "path_length": data["path_length"],
        }
        try:
            if request.POST.get("confirm") == "yes":
                ca = services.certificate_authority_create(actor=request.user, **arguments)
                messages.success(
                    request, f"Certificate authority {ca.name} created ({ca.subject})."
                )
                return HttpResponseRedirect(reverse("pki:ca_detail", args=[ca.name]))
            preview = services.certificate_authority_preview(**arguments)
        except services.PkiError as exc:
            form.add_error(None, str(exc))
            return render(request, "pki/ca_create.html", {"form": form}, status=400)
        return render(
            request,
            "pki/ca_create_confirm.html",
            {"form": _hide(self.form(request.POST), *CA_FIELDS), "preview": preview},
        )


@method_decorator(never_cache, name="dispatch")
class CADisableView(PortalPermissionMixin, View):
    permission_required = MANAGE_CA

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        ca = _ca_or_404(request, name)
        return render(request, "pki/ca_disable.html", {"ca": ca, "form": CADisableForm()})

    def post(self, request: HttpRequest, name: str) -> HttpResponse:
        ca = _ca_or_404(request, name)
        form = CADisableForm(request.POST)
        if form.is_valid():
            try:
                services.certificate_authority_disable(
                    actor=request.user, ca=ca, reason=form.cleaned_data["reason"]
                )
            except services.PkiError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"{ca.name} is disabled; it issues nothing more.")
                return HttpResponseRedirect(reverse("pki:ca_detail", args=[ca.name]))
        return render(request, "pki/ca_disable.html", {"ca": ca, "form": form}, status=400)


class CAChainView(PortalPermissionMixin, View):
    """The CA's certificate and its ancestors as one PEM file."""

    permission_required = VIEW_CA

    def get(self, request: HttpRequest, name: str) -> HttpResponse:
        ca = _ca_or_404(request, name)
        return _download(
            selectors.ca_chain_pem(ca=ca), content_type=PEM_TYPE, filename=f"{ca.name}-chain.pem"
        )


class CACertificateView(View):
    """Public: the CA certificate in DER (``.crt``, the AIA caIssuers URL) or PEM.

    No sign-in: relying parties fetch it while building a path (RFC 5280 4.2.2.1), and a CA
    certificate is public by design. Caching headers come with the revocation issue.
    """

    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest, name: str, encoding: str) -> HttpResponse:
        ca = selectors.ca_public_get(name=name)
        if ca is None:
            raise Http404("No such certificate authority.")
        if encoding == "der":
            return HttpResponse(bytes(ca.certificate_der), content_type=DER_CERTIFICATE_TYPE)
        return HttpResponse(ca.certificate_pem, content_type=PEM_TYPE)


# --- certificates ----------------------------------------------------------------------------


class CertificateListView(PortalPermissionMixin, View):
    permission_required = VIEW_CERTIFICATE

    def get(self, request: HttpRequest) -> HttpResponse:
        cas = [(ca.name, ca.name) for ca in selectors.ca_list(user=request.user)]
        form = CertificateFilterForm(
            request.GET, cas=cas, profiles=selectors.profile_filter_choices()
        )
        if not form.is_valid():
            return render(
                request, "pki/certificate_list.html", {"form": form, "page": None}, status=400
            )
        data = form.cleaned_data
        page = selectors.certificate_page(
            user=request.user,
            ca=data["ca"],
            profile=data["profile"],
            status=data["status"],
            expiring_within_days=data["expiring"],
            search=data["q"],
            after=data["after"],
        )
        query = request.GET.copy()
        query.pop("after", None)
        return render(
            request,
            "pki/certificate_list.html",
            {"form": form, "page": page, "filter_query": query.urlencode()},
        )


class CertificateDetailView(PortalPermissionMixin, View):
    permission_required = VIEW_CERTIFICATE

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        certificate = _certificate_or_404(request, pk)
        return render(
            request,
            "pki/certificate_detail.html",
            {"detail": selectors.certificate_detail(certificate=certificate)},
        )


class CertificateDownloadView(PortalPermissionMixin, View):
    """PEM, DER, or the full chain (certificate and intermediates) as PEM."""

    permission_required = VIEW_CERTIFICATE

    def get(self, request: HttpRequest, pk: int, encoding: str) -> HttpResponse:
        certificate = _certificate_or_404(request, pk)
        stem = f"{certificate.ca.name}-{certificate.serial_number_display}"
        if encoding == "pem":
            return _download(
                certificate.certificate_pem, content_type=PEM_TYPE, filename=f"{stem}.pem"
            )
        if encoding == "der":
            return _download(
                bytes(certificate.certificate_der),
                content_type=DER_CERTIFICATE_TYPE,
                filename=f"{stem}.crt",
            )
        if encoding == "chain":
            return _download(
                selectors.certificate_fullchain_pem(certificate=certificate),
                content_type=PEM_TYPE,
                filename=f"{stem}-fullchain.pem",
            )
        raise Http404("No such format.")


# --- issuance --------------------------------------------------------------------------------


class _IssueMixin(PortalPermissionMixin):
    permission_required = ISSUE
    request: HttpRequest

    def choices(self) -> dict[str, list[tuple[str, str]]]:
        return {
            "cas": selectors.ca_issuing_choices(user=self.request.user),
            "profiles": selectors.profile_choices(),
        }

    def issuing_ca(self, form: forms.Form) -> CertificateAuthority:
        return _ca_or_404(self.request, form.cleaned_data["ca"])


CSR_REVIEW_CARRIED = ("csr_pem", "ca", "profile", "days")


@method_decorator(never_cache, name="dispatch")
class IssueFromCSRView(_IssueMixin, View):
    """Step ``request``: paste or upload a CSR, choose CA, profile, validity. Step
    ``review``: the confirmation page shows exactly what will be signed; subject and SANs
    can be changed there (which shows the page again). Step ``issue``: sign."""

    def get(self, request: HttpRequest) -> HttpResponse:
        form = CSRRequestForm(initial={"ca": request.GET.get("ca", "")}, **self.choices())
        return render(request, "pki/issue_csr.html", {"form": form})

    def post(self, request: HttpRequest) -> HttpResponse:
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
        except services.PkiError as exc:
            form.add_error(None, str(exc))
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
            except services.PkiError as exc:
                form.add_error(None, str(exc))
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
            issue_form = _hide(
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
                "edit_form": _hide(form, *CSR_REVIEW_CARRIED),
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

    def get(self, request: HttpRequest) -> HttpResponse:
        form = GeneratedRequestForm(initial={"ca": request.GET.get("ca", "")}, **self.choices())
        return render(request, "pki/issue_generated.html", {"form": form})

    def post(self, request: HttpRequest) -> HttpResponse:
        if request.POST.get("step") == "issue":
            return self.issue_step()
        form = GeneratedRequestForm(request.POST, **self.choices())
        if form.is_valid():
            try:
                preview = self.preview(form)
            except services.PkiError as exc:
                form.add_error(None, str(exc))
            else:
                carried = {name: request.POST.get(name, "") for name in GENERATED_CARRIED}
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
        return _hide(form, *GENERATED_CARRIED)

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
                credential = services.certificate_issue_generated(
                    actor=self.request.user,
                    ca=self.issuing_ca(form),
                    subject=data["subject"],
                    sans=data["san_lines"],
                    profile=data["profile"],
                    days=data["days"],
                    key_type=data["key_type"],
                    pkcs12_password=data["password1"],
                    pem_bundle=data["delivery"] == "pem",
                )
            except services.PkiError as exc:
                form.add_error(None, str(exc))
            else:
                if data["delivery"] == "pem" and credential.pem_bundle is not None:
                    return _download(
                        credential.pem_bundle,
                        content_type=PEM_TYPE,
                        filename=f"{credential.filename_stem}.pem",
                    )
                return _download(
                    credential.pkcs12,
                    content_type=PKCS12_TYPE,
                    filename=f"{credential.filename_stem}.p12",
                )
        try:
            # Show what would be signed again next to the errors, if it can still be built.
            check = GeneratedRequestForm(self.request.POST, **self.choices())
            preview = self.preview(check) if check.is_valid() else None
        except services.PkiError:
            preview = None
        return self.confirm_page(form, preview, status=400)


# --- validation ------------------------------------------------------------------------------


class ValidateView(PortalPermissionMixin, View):
    """Paste or upload a certificate (and optionally a chain): every check, pass or fail."""

    permission_required = VIEW_CERTIFICATE

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, "pki/validate.html", {"form": ValidationForm(), "outcome": None})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = ValidationForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            try:
                outcome = services.certificate_validate(
                    actor=request.user,
                    pem_data=data["certificate_data"],
                    chain_pem=data["chain_data"],
                    purpose=data["purpose"],
                    hostname=data["hostname"],
                )
            except services.PkiError as exc:
                form.add_error(None, str(exc))
            else:
                return render(request, "pki/validate.html", {"form": form, "outcome": outcome})
        return render(request, "pki/validate.html", {"form": form, "outcome": None}, status=400)
