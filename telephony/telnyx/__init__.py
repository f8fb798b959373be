"""Telnyx: media streaming (wire.py), signed Call Control webhooks (webhooks.py), Call Control
commands (rest.py)."""
