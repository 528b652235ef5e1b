"""The project ``tests/test_metrics_serve.py`` serves: one route per thing a metric counts."""
