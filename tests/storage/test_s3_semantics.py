"""S3-only semantics of the path-IO, on real S3 servers (moto, SeaweedFS): options and
AWS environment defaults, markers and prefix directories, paged listings, resumable and
exclusive uploads, rename limits, error mapping."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fsftpd.storage import S3PathIO, StorageContext
from fsftpd.storage.s3 import REGISTRY_KEY
from fsftpd.storage.s3_client import S3Settings
from fsftpd.storage.s3_upload import MAX_PARTS, UploadRegistry, part_size
from tests.s3.endpoints import S3Endpoint, free_port

MiB = 1024 * 1024
HOME = "homes/alice/"


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()  # compared with S3's timestamps

    def __call__(self) -> float:
        return self.now


def make_io(endpoint: S3Endpoint, bucket: str, context: StorageContext | None = None,
            **options: Any) -> S3PathIO:
    return S3PathIO.from_url(f"s3://{bucket}/{HOME}", storage_options=endpoint.options(**options),
                             context=context or StorageContext())


@pytest.fixture
async def s3io(s3_endpoint: S3Endpoint, bucket: str) -> AsyncIterator[S3PathIO]:
    io = make_io(s3_endpoint, bucket)
    yield io
    await io.aclose()


async def upload(io: S3PathIO, path: str, data: bytes, *, offset: int = 0, commit: bool = True,
                 pause: float = 0.0) -> int:
    stream = await io.open_write(path, offset=offset)
    for start in range(0, len(data), MiB):
        await stream.write(data[start : start + MiB])
        if pause:
            await asyncio.sleep(pause)  # like the network: parts in flight may finish
    if commit:
        await stream.commit()
    else:
        await stream.abort()
    return stream.bytes_written


async def read_all(io: S3PathIO, path: str) -> bytes:
    stream = await io.open_read(path)
    out = bytearray()
    while block := await stream.read(1 << 20):
        out += block
    await stream.close()
    return bytes(out)


def open_uploads(endpoint: S3Endpoint, bucket: str) -> list[str]:
    return [u["Key"] for u in endpoint.boto().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def marker_keys(endpoint: S3Endpoint, bucket: str) -> list[str]:
    reply = endpoint.boto().list_objects_v2(Bucket=bucket, Prefix=".fsftpd-uploads/")
    return [item["Key"] for item in reply.get("Contents", [])]


# -- options --------------------------------------------------------------------------------
def test_aws_environment_defaults() -> None:
    env = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_SESSION_TOKEN": "TK",
           "AWS_REGION": "eu-west-3", "AWS_ENDPOINT_URL": "http://generic:1",
           "AWS_ENDPOINT_URL_S3": "http://s3only:2"}
    opts = S3Settings.from_options({}, env).fs_options
    assert (opts["key"], opts["secret"], opts["token"]) == ("AK", "SK", "TK")
    assert opts["endpoint_url"] == "http://s3only:2"
    assert opts["client_kwargs"]["region_name"] == "eu-west-3"
    flags = (opts["asynchronous"], opts["skip_instance_cache"], opts["use_listings_cache"])
    assert flags == (True, True, False)
    del env["AWS_ENDPOINT_URL_S3"]
    assert S3Settings.from_options({}, env).fs_options["endpoint_url"] == "http://generic:1"
    explicit = S3Settings.from_options({"key": "mine", "secret": "s", "endpoint_url": "http://x:3",
                                        "region": "us-west-2", "path_style": True,
                                        "use_listings_cache": True}, env)
    assert explicit.fs_options["key"] == "mine" and "token" not in explicit.fs_options
    assert explicit.fs_options["endpoint_url"] == "http://x:3"
    assert explicit.fs_options["client_kwargs"]["region_name"] == "us-west-2"
    assert explicit.fs_options["config_kwargs"]["s3"] == {"addressing_style": "path"}
    assert explicit.fs_options["use_listings_cache"] is False  # never negotiable
    # Nothing in the environment: botocore's default credential chain applies.
    assert "key" not in S3Settings.from_options({}, {}).fs_options
    with pytest.raises(ValueError, match="5 MiB"):
        S3Settings.from_options({"part_size": MiB}, {})


def test_part_sizes_outgrow_the_part_limit() -> None:
    base = 5 * MiB
    assert part_size(1, base) == part_size(1000, base) == base
    assert part_size(1001, base) == 2 * base
    total = sum(part_size(n, base) for n in range(1, MAX_PARTS + 1))
    assert total > 4.8 * 1024**4  # ~S3's 5 TiB object limit, within 10,000 parts
    assert max(part_size(n, base) for n in range(1, MAX_PARTS + 1)) <= 5 * 1024**3


def test_url_mapping(moto_endpoint: S3Endpoint) -> None:
    io = S3PathIO.from_url("s3://bkt", storage_options=moto_endpoint.options(), context=StorageContext())
    assert (io.bucket, io.prefix, io.key("/a/b"), io.dir_key("/")) == ("bkt", "", "a/b", "")
    io = S3PathIO.from_url("s3://bkt/p/q/", storage_options=moto_endpoint.options(), context=StorageContext())
    assert (io.prefix, io.key("/a"), io.dir_key("/a")) == ("p/q/", "p/q/a", "p/q/a/")
    with pytest.raises(OSError) as info:
        io.key("/" + "x" * 1100)
    assert info.value.errno == errno.ENAMETOOLONG


# -- namespace ------------------------------------------------------------------------------
async def test_markers_hidden_and_prefix_directories(s3io: S3PathIO, s3_endpoint: S3Endpoint,
                                                     bucket: str) -> None:
    client = s3_endpoint.boto()
    client.put_object(Bucket=bucket, Key=HOME + "made/", Body=b"")
    client.put_object(Bucket=bucket, Key=HOME + "prefix-only/inner/f.txt", Body=b"f")
    client.put_object(Bucket=bucket, Key=HOME + "both", Body=b"file")
    client.put_object(Bucket=bucket, Key=HOME + "both/child", Body=b"c")
    listed = sorted([(e.name, e.is_dir) async for e in s3io.list("/")])
    # A name that other tools made both a file and a directory shows twice.
    assert listed == [("both", False), ("both", True), ("made", True), ("prefix-only", True)]
    assert [e async for e in s3io.list("/made")] == []
    assert (await s3io.stat("/prefix-only/inner")).is_dir
    assert [e.name async for e in s3io.list("/prefix-only/inner")] == ["f.txt"]
    assert not (await s3io.stat("/both")).is_dir  # the file wins for commands naming it


async def test_listing_streams_page_by_page(s3_endpoint: S3Endpoint, bucket: str) -> None:
    io = make_io(s3_endpoint, bucket, list_page_size=10)
    client = s3_endpoint.boto()
    for i in range(25):
        client.put_object(Bucket=bucket, Key=f"{HOME}f{i:03d}", Body=b"x")
    seen: list[str] = []
    async for entry in io.list("/"):
        if not seen:
            # Written after the first page was read: a listing that loaded everything
            # up front could not show it.
            client.put_object(Bucket=bucket, Key=f"{HOME}zz-late", Body=b"x")
        seen.append(entry.name)
    assert seen == [f"f{i:03d}" for i in range(25)] + ["zz-late"]
    await io.aclose()


async def test_two_servers_never_see_stale_listings(s3_endpoint: S3Endpoint, bucket: str) -> None:
    one, two = make_io(s3_endpoint, bucket), make_io(s3_endpoint, bucket)  # separate clients
    assert [e async for e in two.list("/")] == []
    await upload(one, "/new", b"n")
    await one.mkdir("/dir")
    assert sorted([e.name async for e in two.list("/")]) == ["dir", "new"]
    await two.unlink("/new")
    await two.rmdir("/dir")
    assert [e async for e in one.list("/")] == []
    await one.aclose()
    await two.aclose()


async def test_directory_rename_limit(s3_endpoint: S3Endpoint, bucket: str) -> None:
    io = make_io(s3_endpoint, bucket, max_rename_objects=2)
    await io.mkdir("/d")
    await upload(io, "/d/a", b"a")
    await upload(io, "/d/b", b"b")  # marker + 2 files: 3 objects
    with pytest.raises(PermissionError, match="more than 2 objects"):
        await io.rename("/d", "/e")
    assert sorted([e.name async for e in io.list("/d")]) == ["a", "b"]
    assert not await io.exists("/e")
    await io.aclose()


# -- uploads --------------------------------------------------------------------------------
async def test_interrupted_upload_resumes(s3_endpoint: S3Endpoint, bucket: str) -> None:
    data = os.urandom(11 * MiB + 5)
    io = make_io(s3_endpoint, bucket)
    await upload(io, "/r.bin", data, commit=False)
    assert not await io.exists("/r.bin")
    held = await io.size("/r.bin")
    assert held == 10 * MiB  # two full parts; the 1 MiB tail was never stored
    assert open_uploads(s3_endpoint, bucket) == [HOME + "r.bin"]
    sent = await upload(io, "/r.bin", data[held:], offset=held)
    assert sent == len(data) - held  # only the rest crossed the wire
    assert await read_all(io, "/r.bin") == data
    assert open_uploads(s3_endpoint, bucket) == []
    await io.aclose()


async def test_resume_window_expires(s3_endpoint: S3Endpoint, bucket: str) -> None:
    clock = FakeClock()
    context = StorageContext()
    context.cache[REGISTRY_KEY] = UploadRegistry(clock=clock)
    io = make_io(s3_endpoint, bucket, context, resume_ttl=600)
    await upload(io, "/t.bin", os.urandom(6 * MiB), commit=False)
    assert await io.size("/t.bin") == 5 * MiB
    clock.now = time.time() + 601  # the marker's time is when the upload was cut
    with pytest.raises(FileNotFoundError):
        await io.size("/t.bin")
    await upload(io, "/other", b"o")  # any upload sweeps expired ones
    assert open_uploads(s3_endpoint, bucket) == []
    await io.aclose()


async def test_no_resume_window_aborts_at_once(s3_endpoint: S3Endpoint, bucket: str) -> None:
    io = make_io(s3_endpoint, bucket, resume_ttl=0)
    await upload(io, "/n.bin", os.urandom(6 * MiB), commit=False)
    assert open_uploads(s3_endpoint, bucket) == []
    with pytest.raises(FileNotFoundError):
        await io.size("/n.bin")
    await io.aclose()


async def test_delete_discards_an_interrupted_upload(s3io: S3PathIO, s3_endpoint: S3Endpoint,
                                                     bucket: str) -> None:
    await upload(s3io, "/d.bin", os.urandom(6 * MiB), commit=False)
    await s3io.unlink("/d.bin")
    assert open_uploads(s3_endpoint, bucket) == []
    with pytest.raises(FileNotFoundError):
        await s3io.unlink("/d.bin")


async def test_kept_uploads_outlive_the_process(s3_endpoint: S3Endpoint, bucket: str) -> None:
    """The kept upload is in the bucket: a path-IO with nothing in common with the one
    that was interrupted (its own client and registry, as another process or the same
    server restarted) sees it and resumes it."""
    data = os.urandom(11 * MiB)
    first = make_io(s3_endpoint, bucket)
    await upload(first, "/c.bin", data, commit=False)
    await first.aclose()
    assert open_uploads(s3_endpoint, bucket) == [HOME + "c.bin"]
    second = make_io(s3_endpoint, bucket)
    assert second.client is not first.client and second.registry is not first.registry
    held = await second.size("/c.bin")
    assert held == 10 * MiB
    assert await upload(second, "/c.bin", data[held:], offset=held) == len(data) - held
    assert await read_all(second, "/c.bin") == data
    assert open_uploads(s3_endpoint, bucket) == []
    assert marker_keys(s3_endpoint, bucket) == []
    await second.aclose()


async def test_other_tools_uploads_are_left_alone(s3_endpoint: S3Endpoint, bucket: str) -> None:
    """A multipart upload fsftpd did not keep (another tool's, or one running on another
    process) is never adopted, reported by SIZE, resumed or aborted."""
    client = s3_endpoint.boto()
    key = HOME + "foreign.bin"
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"f" * (5 * MiB))
    clock = FakeClock()
    context = StorageContext()
    context.cache[REGISTRY_KEY] = UploadRegistry(clock=clock)
    io = make_io(s3_endpoint, bucket, context, resume_ttl=60)
    with pytest.raises(FileNotFoundError):
        await io.size("/foreign.bin")
    with pytest.raises(OSError) as info:
        await upload(io, "/foreign.bin", b"x", offset=5 * MiB)  # not resumable: 554
    assert info.value.errno == errno.ESPIPE
    clock.now += 3600  # long past any resume time, and swept
    await upload(io, "/foreign.bin", b"mine")
    await io.unlink("/foreign.bin")
    assert open_uploads(s3_endpoint, bucket) == [key]
    parts = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    assert [p["Size"] for p in parts] == [5 * MiB]
    client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    await io.aclose()


async def test_markers_hidden_at_the_bucket_root(s3_endpoint: S3Endpoint, bucket: str) -> None:
    io = S3PathIO.from_url(f"s3://{bucket}", storage_options=s3_endpoint.options(),
                           context=StorageContext())
    await upload(io, "/k.bin", os.urandom(6 * MiB), commit=False)
    assert len(marker_keys(s3_endpoint, bucket)) == 1
    assert [e.name async for e in io.list("/")] == []
    with pytest.raises(PermissionError):
        await io.stat("/.fsftpd-uploads")
    assert await io.size("/k.bin") == 5 * MiB
    await io.unlink("/k.bin")
    assert marker_keys(s3_endpoint, bucket) == [] and open_uploads(s3_endpoint, bucket) == []
    await io.aclose()


async def test_one_writer_per_key(s3io: S3PathIO) -> None:
    first = await s3io.open_write("/w")
    await first.write(b"first")
    with pytest.raises(OSError) as info:
        await s3io.open_write("/w")
    assert info.value.errno == errno.EBUSY
    other = await s3io.open_write("/other")  # other keys are not blocked
    await other.abort()
    await first.commit()
    second = await s3io.open_write("/w")
    await second.write(b"second")
    await second.commit()
    assert await read_all(s3io, "/w") == b"second"


# -- errors ---------------------------------------------------------------------------------
async def test_missing_bucket(moto_endpoint: S3Endpoint) -> None:
    io = S3PathIO.from_url("s3://no-such-bucket-fsftpd/home", storage_options=moto_endpoint.options(),
                           context=StorageContext())
    with pytest.raises(FileNotFoundError):
        await io.stat("/x")
    with pytest.raises(FileNotFoundError):
        [e async for e in io.list("/")]
    await io.aclose()


async def test_unreachable_endpoint() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    options = {"key": "k", "secret": "s", "endpoint_url": url, "region": "us-east-1",
               "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}
    io = S3PathIO.from_url("s3://b/h", storage_options=options, context=StorageContext())
    with pytest.raises(ConnectionError, match="unreachable") as info:
        await io.stat("/x")
    assert url not in str(info.value)  # replies do not name the endpoint
    await io.aclose()


async def test_wrong_credentials_are_permission_errors(s3_endpoint: S3Endpoint, bucket: str) -> None:
    if s3_endpoint.name == "moto":
        pytest.skip("moto accepts any credentials")
    io = make_io(s3_endpoint, bucket, secret="wrong-secret")
    with pytest.raises(PermissionError):
        await io.stat("/x")
    await io.aclose()


def test_s3_error_codes_become_the_shared_errnos() -> None:
    """The translation table alone (no server): S3 codes as s3fs raises them."""
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
    from s3fs.errors import translate_boto_error

    from fsftpd.protocol.errors import reply_for_exception
    from fsftpd.storage.s3_client import translate

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": code},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    statuses = {"NoSuchKey": 404, "AccessDenied": 403, "SlowDown": 503, "PreconditionFailed": 412}
    cases = {
        "NoSuchKey": 550, "AccessDenied": 550, "EntityTooLarge": 552, "QuotaExceeded": 552,
        "XMinioStorageFull": 552, "SlowDown": 450, "InternalError": 451, "PreconditionFailed": 451,
    }
    for code, reply in cases.items():
        # As s3fs raises it: its own translation, chained to the ClientError.
        raised = translate_boto_error(client_error(code, statuses.get(code, 500)))
        mapped = translate(raised)
        assert isinstance(mapped, OSError), code
        assert reply_for_exception(mapped).code == reply, (code, reply_for_exception(mapped))
    unreachable = translate(EndpointConnectionError(endpoint_url="http://10.0.0.1:9/bucket/key"))
    assert isinstance(unreachable, ConnectionError) and "10.0.0.1" not in str(unreachable)
    assert reply_for_exception(unreachable).code == 451
    timeout = translate(ReadTimeoutError(endpoint_url="http://x"))
    assert isinstance(timeout, TimeoutError) and reply_for_exception(timeout).code == 451


async def test_part_size_grows_without_losing_data(s3_endpoint: S3Endpoint, bucket: str) -> None:
    io = make_io(s3_endpoint, bucket)
    io.part_growth_every = 2  # parts of 5, 5, 10, 10, 20 MiB... (1,000 per size in use)
    data = os.urandom(23 * MiB)
    await upload(io, "/g.bin", data[: 22 * MiB], commit=False, pause=0.05)
    assert await io.size("/g.bin") == 20 * MiB  # three full parts: 5 + 5 + 10
    sent = await upload(io, "/g.bin", data[20 * MiB :], offset=20 * MiB, pause=0.05)
    assert sent == 3 * MiB
    assert await read_all(io, "/g.bin") == data
    assert open_uploads(s3_endpoint, bucket) == []
    await io.aclose()


# -- conditional writes: two writers of one key on different processes -------------------------
@pytest.mark.parametrize("size", [100, 6 * MiB], ids=["put", "multipart"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
async def test_conditional_writes_refuse_the_later_writer(s3_endpoint: S3Endpoint, bucket: str,
                                                          size: int, existing: bool) -> None:
    """With conditional_writes, the upload that completes second (on another process:
    separate clients and registries) fails with EBUSY (450) and leaves the first one's
    object whole; without them the later one wins, also whole."""
    if existing and size > MiB and s3_endpoint.name == "moto":
        pytest.skip("moto ignores If-Match on CompleteMultipartUpload (SeaweedFS and AWS honour it)")
    first_io = make_io(s3_endpoint, bucket, conditional_writes=True)
    second_io = make_io(s3_endpoint, bucket, conditional_writes=True)
    if existing:
        await upload(first_io, "/c.bin", b"old")
    one, two = os.urandom(size), os.urandom(size)
    first = await first_io.open_write("/c.bin")
    second = await second_io.open_write("/c.bin")
    await first.write(one)
    await second.write(two)
    await first.commit()
    with pytest.raises(OSError) as info:
        await second.commit()
    assert info.value.errno == errno.EBUSY
    await second.abort()  # what the transfer layer does after a failed commit
    assert await read_all(second_io, "/c.bin") == one
    assert open_uploads(s3_endpoint, bucket) == [] and marker_keys(s3_endpoint, bucket) == []
    # Without conditions: the later completion replaces the object whole.
    plain_a, plain_b = make_io(s3_endpoint, bucket), make_io(s3_endpoint, bucket)
    third, fourth = await plain_a.open_write("/c.bin"), await plain_b.open_write("/c.bin")
    await third.write(two)
    await fourth.write(one[::-1])
    await third.commit()
    await fourth.commit()
    assert await read_all(plain_a, "/c.bin") == one[::-1]
    for io in (first_io, second_io, plain_a, plain_b):
        await io.aclose()


async def test_sweep_aborts_expired_uploads_of_any_name(s3_endpoint: S3Endpoint, bucket: str) -> None:
    """A process that never touches the name still aborts an expired kept upload (the
    bucket sweep when an upload starts), and only fsftpd's."""
    client = s3_endpoint.boto()
    foreign = client.create_multipart_upload(Bucket=bucket, Key=HOME + "tool.bin")["UploadId"]
    cut = make_io(s3_endpoint, bucket, resume_ttl=600)
    await upload(cut, "/kept.bin", os.urandom(6 * MiB), commit=False)
    await cut.aclose()
    clock = FakeClock()
    context = StorageContext()
    context.cache[REGISTRY_KEY] = UploadRegistry(clock=clock)
    other = make_io(s3_endpoint, bucket, context, resume_ttl=600)
    await upload(other, "/first", b"1")  # swept now: nothing has expired yet
    assert sorted(open_uploads(s3_endpoint, bucket)) == [HOME + "kept.bin", HOME + "tool.bin"]
    clock.now = time.time() + 601
    await upload(other, "/second", b"2")
    assert open_uploads(s3_endpoint, bucket) == [HOME + "tool.bin"]
    assert marker_keys(s3_endpoint, bucket) == []
    client.abort_multipart_upload(Bucket=bucket, Key=HOME + "tool.bin", UploadId=foreign)
    await other.aclose()
