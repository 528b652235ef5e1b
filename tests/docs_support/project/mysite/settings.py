from myproject.settings import *  # noqa: F403
