"""Twilio: Media Streams (wire.py), signed webhooks (webhooks.py), REST calls (rest.py)."""
