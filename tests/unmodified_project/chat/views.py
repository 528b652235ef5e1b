from django.http import HttpRequest, HttpResponse


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Chat rooms: type a room name to join", content_type="text/plain")
