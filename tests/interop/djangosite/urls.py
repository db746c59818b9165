"""The interop routes, as a Django URLconf."""

from __future__ import annotations

from django.urls import path

from tests.interop.djangosite import views

urlpatterns = [
    path("hello", views.hello),
    path("greet/<str:name>", views.greet),
    path("query", views.query),
    path("form", views.form),
    path("json", views.json_echo),
    path("upload", views.upload),
    path("echo", views.echo),
    path("cookies/set", views.set_cookies),
    path("cookies", views.cookies),
    path("redirect", views.go_elsewhere),
    path("stream", views.stream),
    path("download", views.download),
    path("headers", views.headers),
    path("unicode-header", views.unicode_header),
    path("wait", views.wait),
    path("whoami", views.whoami),
    # Django only: CSRF protection end to end.
    path("csrf", views.csrf_token),
    path("protected", views.protected),
]
