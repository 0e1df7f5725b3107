from django.urls import path

from . import views

app_name = "audit"

urlpatterns = [
    path("", views.EventListView.as_view(), name="event_list"),
    path("events/<int:sequence>/", views.EventDetailView.as_view(), name="event_detail"),
    path("chain/", views.ChainStatusView.as_view(), name="chain"),
    path("chain/verify/", views.ChainVerifyView.as_view(), name="chain_verify"),
    path("chain/head.json", views.TreeHeadDownloadView.as_view(), name="tree_head"),
    path("export.<str:fmt>", views.ExportView.as_view(), name="export"),
]
