"""The two pytest-django features the tutorial's tests use, for running them here.

``@pytest.mark.django_db``: the database is emptied before the test.
``django_user_model``: the user model. Django is already set up by ``runner.py``;
the test environment is set up as Django's test runner does.
"""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test.utils import setup_test_environment


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "django_db(transaction=False): uses the database")
    setup_test_environment()  # as pytest-django does: "testserver" is an allowed host


@pytest.fixture(autouse=True)
def _django_db(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("django_db"):
        call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def django_user_model() -> type:
    return get_user_model()
