"""An s3:// home through the command: credentials from AWS_*_FILE, checked at start."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.appliance.proc import Fsftpd, base_env
from tests.s3.endpoints import KEY, REGION, SECRET, S3Endpoint
from tests.s3.fixtures import moto_endpoint

__all__ = ["moto_endpoint"]


@pytest.mark.s3
def test_s3_home_with_a_secret_from_a_file(tmp_path: Path, moto_endpoint: S3Endpoint) -> None:
    bucket = moto_endpoint.new_bucket()
    secret = tmp_path / "aws_secret"
    secret.write_text(SECRET + "\n")
    env = base_env(tmp_path, FSFTPD_HOME=f"s3://{bucket}/ftp", FSFTPD_USER="s", FSFTPD_PASSWORD="pw",
                   AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY_FILE=str(secret),
                   FSFTPD_STORAGE_OPTIONS=json.dumps({"endpoint_url": moto_endpoint.url, "region": REGION}))
    with Fsftpd(env) as proc:
        ftp = proc.ftp("s", "pw")
        ftp.storbinary("STOR up.txt", io.BytesIO(b"on s3"))
        assert ftp.nlst() == ["up.txt"]
        ftp.quit()
        assert proc.stop() == 0
    body = moto_endpoint.boto().get_object(Bucket=bucket, Key="ftp/up.txt")["Body"].read()
    assert body == b"on s3"
    assert SECRET not in proc.output
    # a bucket that does not exist stops the start
    env["FSFTPD_HOME"] = "s3://no-such-bucket-here/ftp"
    from tests.appliance.proc import run

    result = run(env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "\nfsftpd: FSFTPD_HOME: s3://no-such-bucket-here/ftp: S3 bucket does not exist" in result.stderr
