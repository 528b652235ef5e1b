from chat import views
from django.urls import path

urlpatterns = [
    path("chat/", views.index, name="index"),
]
