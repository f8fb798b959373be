import asyncio

import pytest
from channels.layers import get_channel_layer
from django.conf import settings


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs the real Redis (REDIS_URL set, as in CI)")
async def test_a_consumer_idle_on_the_redis_layer_longer_than_the_blocking_pop_survives():
    # channels-redis blocks 5 s per pop; redis-py 8 also times sockets out after 5 s by default.
    layer = get_channel_layer()
    name = await layer.new_channel("idle.")
    receiver = asyncio.ensure_future(layer.receive(name))
    try:
        await asyncio.sleep(6.5)
        assert not receiver.done() or receiver.exception() is None
        await layer.send(name, {"type": "wake.up"})
        async with asyncio.timeout(10):
            message = await receiver
    finally:
        receiver.cancel()
    assert message["type"] == "wake.up"
