"""Pytest fixtures for the S3 endpoints (imported by the conftest files that need them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import fsftpd
from tests.s3 import endpoints
from tests.s3.endpoints import FaultProxy, S3Endpoint

S3_PARAMS = [
    pytest.param("moto", marks=pytest.mark.s3),
    pytest.param("seaweedfs", marks=pytest.mark.s3),
]


#: every home kind, for tests that run on each: local disk, memory, S3 on moto, on SeaweedFS
HOMES = [
    "local",
    "memory",
    pytest.param("s3-moto", marks=pytest.mark.s3),
    pytest.param("s3-seaweedfs", marks=pytest.mark.s3),
]


def user_on(kind: str, tmp_path: Path, login: str = "alice", password: str = "secret") -> fsftpd.User:
    """A user whose home is of ``kind`` (one of :data:`HOMES`); S3 homes get a new bucket."""
    if kind == "local":
        return fsftpd.User(login, password, base_path=str(tmp_path / "home"))
    if kind == "memory":
        return fsftpd.User(login, password, base_path=f"memory://{login}")
    endpoint = endpoint_named(kind.removeprefix("s3-"))
    return fsftpd.User(login, password, base_path=f"s3://{endpoint.new_bucket()}/{login}",
                       storage_options=endpoint.options())


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
