"""danmaku-loadtest: drives real WebSocket viewers and senders against a running system."""
