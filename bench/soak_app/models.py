"""One table, so that consumers write and read real rows per message."""

from django.db import models


class Note(models.Model):
    room = models.CharField(max_length=64, db_index=True)
    text = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "soak_app"
