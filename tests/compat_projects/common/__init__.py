"""What every compat project shares: the health page and the ``prepare_compat`` command."""
