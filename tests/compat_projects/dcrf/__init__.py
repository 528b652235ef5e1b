"""A djangochannelsrestframework project: notes over a WebSocket API."""
