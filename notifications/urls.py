from django.urls import path

from . import views

app_name = "notifications"

urlpatterns = [
    path("watchers/", views.WatcherListView.as_view(), name="watchers"),
    path("watchers/<int:pk>/delete/", views.WatcherDeleteView.as_view(), name="watcher_delete"),
]
