"""Audit event types written by the vault (listed in the README)."""

from django.db import models


class VaultAction(models.TextChoices):
    KEY_CREATED = "key.created", "Key created"
    KEY_ACTIVATED = "key.activated", "Key activated"
    KEY_ROTATED = "key.rotated", "Key rotated"
    KEY_SUSPENDED = "key.suspended", "Key suspended"
    KEY_RESUMED = "key.resumed", "Key resumed"
    KEY_DEACTIVATED = "key.deactivated", "Key deactivated"
    KEY_COMPROMISED = "key.compromised", "Key reported compromised"
    KEY_VERSION_COMPROMISED = "key.version_compromised", "Key version reported compromised"
    KEY_DESTRUCTION_REQUESTED = "key.destruction_requested", "Key destruction requested"
    KEY_DESTRUCTION_APPROVED = "key.destruction_approved", "Key destruction approved (scheduled)"
    KEY_DESTRUCTION_REJECTED = "key.destruction_rejected", "Key destruction request rejected"
    KEY_DESTRUCTION_WITHDRAWN = "key.destruction_withdrawn", "Key destruction request withdrawn"
    KEY_DESTRUCTION_EXPIRED = (
        "key.destruction_expired",
        "Key destruction request expired undecided",
    )
    KEY_DESTRUCTION_CANCELLED = "key.destruction_cancelled", "Key destruction cancelled"
    KEY_DESTROYED = "key.destroyed", "Key destroyed (material erased)"
    KEY_IMPORT_PARAMETERS_ISSUED = (
        "key.import_parameters_issued",
        "Key import parameters issued (one-time wrapping key)",
    )
    KEY_IMPORTED = "key.imported", "Key material imported (origin external)"
    KEY_IMPORT_REFUSED = "key.import_refused", "Key import refused"
    KEY_INTEGRITY_CHECKED = "key.integrity_checked", "Key material integrity checked"
    KEY_INTEGRITY_FAILED = "key.integrity_failed", "Key material failed its integrity check"
    CLIENT_CREATED = "client.created", "Client service registered"
    CLIENT_TOKEN_ISSUED = "client.token_issued", "Client enrollment token issued"
    CLIENT_TOKEN_VOIDED = "client.token_voided", "Unused client enrollment token voided"
    CLIENT_ENROLLED = "client.enrolled", "Client enrolled (certificate issued)"
    CLIENT_ENROLLMENT_REFUSED = "client.enrollment_refused", "Client enrollment refused"
    CLIENT_SUSPENDED = "client.suspended", "Client suspended"
    CLIENT_RESUMED = "client.resumed", "Client resumed"
    CLIENT_REVOKED = "client.revoked", "Client revoked"
    GRANT_CREATED = "grant.created", "Key granted to a client"
    GRANT_WITHDRAWN = "grant.withdrawn", "Grant withdrawn"
    KEY_DELIVERED = "key.delivered", "Key version delivered to a client"
    KEY_FETCH_REFUSED = "key.fetch_refused", "Key fetch refused"
    KEY_OPERATION = "key.operation", "Key operation batch (operations API)"
    KEY_OPERATION_REFUSED = "key.operation_refused", "Key operation refused (operations API)"
    CLIENT_SESSION_OPENED = "client.session_opened", "Client opened an operations session"
    SERVER_CERTIFICATE_ISSUED = "server.certificate_issued", "KMS server certificate issued"
    DEPLOYMENT_CREATED = "server.deployment_created", "Deployment identity created"
    API_REQUESTS_REFUSED = (
        "api.requests_refused",
        "Client API requests refused, not attributable to a client (count per source and minute)",
    )
    # Two-person requests of the distribution (vault.approvals, issue 15).
    GRANT_REQUESTED = "grant.requested", "Key grant to a client requested (two-person rule)"
    GRANT_REQUEST_APPROVED = "grant.request_approved", "Key grant request approved"
    GRANT_REQUEST_REJECTED = "grant.request_rejected", "Key grant request rejected"
    GRANT_REQUEST_WITHDRAWN = "grant.request_withdrawn", "Key grant request withdrawn"
    GRANT_REQUEST_EXPIRED = "grant.request_expired", "Key grant request expired undecided"
    KEY_EXPORT_POLICY_CHANGED = "key.export_policy_changed", "Key export policy changed"
    KEY_EXPORT_POLICY_REQUESTED = (
        "key.export_policy_requested",
        "Weaker key export policy requested (two-person rule)",
    )
    KEY_EXPORT_POLICY_REJECTED = "key.export_policy_rejected", "Export policy request rejected"
    KEY_EXPORT_POLICY_WITHDRAWN = (
        "key.export_policy_withdrawn",
        "Export policy request withdrawn",
    )
    KEY_EXPORT_POLICY_EXPIRED = "key.export_policy_expired", "Export policy request expired"
    CLIENT_REENROLLMENT_REQUESTED = (
        "client.reenrollment_requested",
        "Re-enrollment of a client holding grants requested (two-person rule)",
    )
    CLIENT_REENROLLMENT_APPROVED = "client.reenrollment_approved", "Client re-enrollment approved"
    CLIENT_REENROLLMENT_REJECTED = "client.reenrollment_rejected", "Client re-enrollment rejected"
    CLIENT_REENROLLMENT_WITHDRAWN = (
        "client.reenrollment_withdrawn",
        "Client re-enrollment request withdrawn",
    )
    CLIENT_REENROLLMENT_EXPIRED = (
        "client.reenrollment_expired",
        "Client re-enrollment request expired",
    )
