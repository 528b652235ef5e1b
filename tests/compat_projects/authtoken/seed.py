"""The project's test data: the user ``alice`` and her DRF token."""

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

#: Alice's token, known to the test.
ALICE_TOKEN = "a1" * 20


def alice_with_a_token() -> None:
    alice = get_user_model().objects.create_user("alice")
    Token.objects.create(user=alice, key=ALICE_TOKEN)
