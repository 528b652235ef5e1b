"""``prepare_compat``: create the project's tables, then add its test data."""

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.utils.module_loading import import_string


class Command(BaseCommand):
    help = "Create the tables (apps with and without migrations) and run settings.COMPAT_SEED."

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", run_syncdb=True, verbosity=0)
        seed = getattr(settings, "COMPAT_SEED", None)
        if seed:
            import_string(seed)()
        self.stdout.write("prepared")
