"""Django views of the metrics test project (served by channels_runtime.http)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path


def item(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse(f"item {pk}")


def fail(request: HttpRequest) -> HttpResponse:
    raise ValueError("this view fails on purpose")


urlpatterns = [path("items/<int:pk>/", item), path("fail/", fail)]
