"""The one model the API serves (no migrations: prepare_compat creates its table)."""

from django.db import models


class Note(models.Model):
    title = models.CharField(max_length=100)

    class Meta:
        app_label = "dcrf"
