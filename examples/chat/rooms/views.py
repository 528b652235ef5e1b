"""The pages: room list, a room, and sign-up. Log in and out are Django's own views."""

from __future__ import annotations

import re

from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.db.models import Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from .models import ROOM_NAME_PATTERN, Message

_ROOM_NAME = re.compile(rf"^{ROOM_NAME_PATTERN}$")


def index(request: HttpRequest) -> HttpResponse:
    """Pick a room: type a name (``?room=...``) or follow one of the recently active ones."""
    error = ""
    wanted = request.GET.get("room", "").strip()
    if wanted:
        if _ROOM_NAME.match(wanted):
            return redirect("room", room=wanted)
        error = "Room names use letters, digits, - and _ (up to 50 characters)."
    active_rooms = (
        Message.objects.values("room").annotate(last=Max("created")).order_by("-last")[:10]
    )
    return render(
        request,
        "rooms/index.html",
        {"active_rooms": active_rooms, "error": error, "wanted": wanted},
        status=400 if error else 200,
    )


def room(request: HttpRequest, room: str) -> HttpResponse:
    """The chat page. Messages, history included, arrive over the WebSocket."""
    return render(request, "rooms/room.html", {"room": room})


def signup(request: HttpRequest) -> HttpResponse:
    """Create an account and log straight in, then go back where the visitor came from."""
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = ""
    if request.method == "POST":
        form = UserCreationForm(request.POST)
        if form.is_valid():
            user = form.save()
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect(next_url or "index")
    else:
        form = UserCreationForm()
    return render(request, "rooms/signup.html", {"form": form, "next": next_url})
