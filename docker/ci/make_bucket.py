"""One-shot bucket maker of docker/compose.ci.yaml (MinIO's `mc mb` in compose.yaml).

Runs in the fsftpd image, whose botocore it uses: creates ``$BUCKET`` on ``$AWS_ENDPOINT_URL_S3``
with the ``AWS_*`` credentials, retrying while the S3 server starts (at most ``$WAIT`` s, 120 by
default), then writes and reads back a probe object, so that its exit 0 means the server
stores objects, not just that it answers. An existing bucket is fine.
"""

from __future__ import annotations

import os
import sys
import time

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


def main() -> int:
    bucket = os.environ.get("BUCKET", "fsftpd")
    deadline = time.monotonic() + float(os.environ.get("WAIT", "120"))
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 1}))
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            try:
                client.create_bucket(Bucket=bucket)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
            client.put_object(Bucket=bucket, Key=".fsftpd-probe", Body=b"probe")
            body = client.get_object(Bucket=bucket, Key=".fsftpd-probe")["Body"].read()
            client.delete_object(Bucket=bucket, Key=".fsftpd-probe")
            if body == b"probe":
                print(f"bucket {bucket} ready")
                return 0
        except (BotoCoreError, ClientError) as exc:
            last = exc
        time.sleep(1)
    print(f"bucket {bucket} not made: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
