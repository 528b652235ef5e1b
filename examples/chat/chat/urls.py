"""URLs of the chat example's pages. The WebSocket routes are in ``rooms/routing.py``."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import path, re_path

from rooms import views
from rooms.models import ROOM_NAME_PATTERN

urlpatterns = [
    path("", views.index, name="index"),
    re_path(rf"^chat/(?P<room>{ROOM_NAME_PATTERN})/$", views.room, name="room"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            template_name="rooms/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", views.signup, name="signup"),
    path("admin/", admin.site.urls),
]

# CSS and JavaScript, served by Django itself while DEBUG is on (the default
# here), so `channels-runtime serve` needs no separate static file server. With
# DEBUG off, run `manage.py collectstatic` and serve STATIC_ROOT from a web
# server instead.
urlpatterns += staticfiles_urlpatterns()
