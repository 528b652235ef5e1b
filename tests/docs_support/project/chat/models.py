from django.db import models


class Room(models.Model):
    name = models.CharField(max_length=50)


class Message(models.Model):
    room = models.CharField(max_length=50, default="lobby")
    text = models.TextField()


class Click(models.Model):
    user = models.CharField(max_length=150)
