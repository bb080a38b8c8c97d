"""Pytest fixtures for the S3 endpoints (imported by the conftest files that need them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3 import endpoints
from tests.s3.endpoints import FaultProxy, S3Endpoint

S3_PARAMS = [
    pytest.param("moto", marks=pytest.mark.s3),
    pytest.param("seaweedfs", marks=pytest.mark.s3),
]


def endpoint_named(name: str) -> S3Endpoint:
    if name == "moto":
        return endpoints.moto()
    found = endpoints.seaweedfs()
    if found is None:
        pytest.skip(f"SeaweedFS unavailable: {endpoints.seaweedfs_problem}")
    return found


@pytest.fixture(scope="session")
def moto_endpoint() -> S3Endpoint:
    return endpoints.moto()


@pytest.fixture(params=S3_PARAMS)
def s3_endpoint(request: pytest.FixtureRequest) -> S3Endpoint:
    """Each S3 test runs on moto and on SeaweedFS."""
    return endpoint_named(request.param)


@pytest.fixture
def bucket(s3_endpoint: S3Endpoint) -> str:
    return s3_endpoint.new_bucket()


@pytest.fixture
def moto_bucket(moto_endpoint: S3Endpoint) -> str:
    return moto_endpoint.new_bucket()


@pytest.fixture
def fault_proxy(moto_endpoint: S3Endpoint) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto_endpoint.url).start()
    try:
        yield proxy
    finally:
        proxy.close()
