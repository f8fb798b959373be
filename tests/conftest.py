from __future__ import annotations

import pytest


@pytest.fixture
def profile(db):
    from calls.services import profile_ensure_demo

    return profile_ensure_demo()


@pytest.fixture
def staff_user(db, django_user_model):
    return django_user_model.objects.create_user(
        username="staff", password="pw-for-tests-1", is_staff=True, is_superuser=True
    )


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client
