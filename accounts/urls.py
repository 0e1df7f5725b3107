from django.urls import path

from . import mfa_views, views

app_name = "accounts"

urlpatterns = [
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/invitation/", views.InvitationView.as_view(), name="invitation"),
    path("accounts/mfa/", mfa_views.MfaManageView.as_view(), name="mfa_manage"),
    path("accounts/mfa/verify/", mfa_views.MfaVerifyView.as_view(), name="mfa_verify"),
    path("accounts/mfa/enroll/", mfa_views.MfaEnrollView.as_view(), name="mfa_enroll"),
    path("users/", views.UserListView.as_view(), name="user_list"),
    path("users/new/", views.UserCreateView.as_view(), name="user_create"),
    path("users/<int:pk>/", views.UserDetailView.as_view(), name="user_detail"),
    path("users/<int:pk>/roles/", views.UserRolesView.as_view(), name="user_roles"),
    path("users/<int:pk>/deactivate/", views.UserDeactivateView.as_view(), name="user_deactivate"),
    path("users/<int:pk>/reactivate/", views.UserReactivateView.as_view(), name="user_reactivate"),
    path(
        "users/<int:pk>/password/",
        views.UserPasswordResetView.as_view(),
        name="user_password_reset",
    ),
    path("users/<int:pk>/invitation/", views.UserInvitationView.as_view(), name="user_invitation"),
    path("users/<int:pk>/mfa/reset/", mfa_views.UserMfaResetView.as_view(), name="user_mfa_reset"),
]
