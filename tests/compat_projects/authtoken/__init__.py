"""A channels-auth-token-middlewares project: who am I, by DRF token."""
