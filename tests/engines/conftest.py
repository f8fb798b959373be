from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.config import CallConfig, EngineCredentials
from tests.fake_vendor import FakeVendor

# Short enough to keep the timeout tests quick, long enough for a loaded CI machine.
TEST_TIMEOUT_S = 1.5


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as server:
        yield server


@pytest.fixture
def backup_vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as server:
        yield server


@pytest.fixture
def config() -> CallConfig:
    return CallConfig(language="es-ES", engine_timeout_s=TEST_TIMEOUT_S)


def credentials_for(vendor: FakeVendor) -> EngineCredentials:
    return EngineCredentials(
        groq_api_key="gsk-test",
        groq_base_url=vendor.groq_base_url,
        openai_api_key="sk-test",
        openai_base_url=vendor.openai_base_url,
    )
