from django.contrib import admin

from .models import Message


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("created", "room", "author_name", "text")
    list_filter = ("room",)
    search_fields = ("text", "room", "user__username")
    list_select_related = ("user",)
