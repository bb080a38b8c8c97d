from tests.s3.fixtures import bucket, fault_proxy, moto_bucket, moto_endpoint, s3_endpoint

__all__ = ["bucket", "fault_proxy", "moto_bucket", "moto_endpoint", "s3_endpoint"]
