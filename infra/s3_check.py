"""Object-store health check for infra/services.sh: S3 answers, the bucket exists, a write reads.

Exit 0 when healthy, 1 otherwise (the reason on stderr). Creates the bucket on first use.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from urllib.parse import urlparse

import pyarrow.fs as pafs


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("endpoint", "bucket", "access_key", "secret_key"):
        parser.add_argument(name)
    args = parser.parse_args()
    endpoint, bucket, access_key, secret_key = (
        args.endpoint,
        args.bucket,
        args.access_key,
        args.secret_key,
    )
    url = urlparse(endpoint)
    fs = pafs.S3FileSystem(
        access_key=access_key,
        secret_key=secret_key,
        endpoint_override=url.netloc,
        scheme=url.scheme,
        region="us-east-1",
        allow_bucket_creation=True,
        connect_timeout=3,
        request_timeout=5,
    )
    try:
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            fs.create_dir(bucket)
        probe = f"{bucket}/.whylake-health/{uuid.uuid4().hex}"
        with fs.open_output_stream(probe) as out:
            out.write(b"ok")
        with fs.open_input_stream(probe) as back:
            body = back.read()
        fs.delete_file(probe)
    except OSError as exc:
        print(f"object store at {endpoint} not ready: {exc}", file=sys.stderr)
        return 1
    if body != b"ok":
        print(f"object store at {endpoint} returned {body!r} for a probe", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
