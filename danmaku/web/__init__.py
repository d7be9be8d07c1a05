"""Web role: the player and console pages, the HTTP API, /metrics."""
