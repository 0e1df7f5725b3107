from django.urls import path, register_converter

from . import api, ops_api

# Only the operations' own names route to the operations view: anything else under keys/
# falls through to the catch-all's `not_found`.
register_converter(ops_api.OperationConverter, "operation")

app_name = "api"

urlpatterns = [
    path("enroll", api.EnrollView.as_view(), name="enroll"),
    path("keys/fetch", api.KeyFetchView.as_view(), name="key_fetch"),
    # The operations API (issue 17): a session, then protected requests in it.
    path("session", ops_api.SessionOpenView.as_view(), name="session"),
    path("session/ping", ops_api.OperationView.as_view(operation="ping"), name="session_ping"),
    path("keys/<operation:operation>", ops_api.OperationView.as_view(), name="key_operation"),
    # Anything else under /api/v1/ answers a problem document, never an HTML page.
    path("", api.NotFoundView.as_view(), name="index"),
    path("<path:rest>", api.NotFoundView.as_view(), name="not_found"),
]
