import pytest
from django.conf import settings


def test_health_answers_without_touching_dependencies(client):
    # No django_db mark: any database access here would raise.
    response = client.get("/health/")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readiness_checks_the_database_and_redis_when_configured(client):
    response = client.get("/health/ready/")
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"]["database"]["ok"]
    if settings.REDIS_URL:
        # In CI REDIS_URL points at the real Redis: prove the checks ran against it.
        assert body["checks"]["redis"]["ok"] and body["checks"]["channel_layer"]["ok"]
    else:
        assert "redis" not in body["checks"]


@pytest.mark.django_db
def test_readiness_is_503_when_redis_is_configured_but_unreachable(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    response = client.get("/health/ready/")
    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["database"]["ok"]
    assert body["checks"]["redis"]["ok"] is False and "Error" in body["checks"]["redis"]["error"]
