"""The one boundary to boto3: client creation, the few S3 calls push/pull need, and botocore errors made typed."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tritonrepo.errors import BucketNotFoundError, StorageAuthError, StorageError
from tritonrepo.repository.manifest import sha256_file
from tritonrepo.storage.url import S3Url

_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
    "403",
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
CHECKSUM_FROM = 1 << 20  # uploads of this size and above carry a CRC32 the store verifies


@dataclass(frozen=True)
class Connection:
    """How to reach S3; None means the standard chain (env, ~/.aws/config, instance role) decides."""

    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    part_size: int = 64 << 20
    concurrency: int = 16


def _code(error: Exception) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def _endpoint(error: Exception) -> str:
    """scheme://host:port only: the full URL carries the request's query, and userinfo could carry a secret."""
    from urllib.parse import urlsplit

    parts = urlsplit(getattr(error, "kwargs", {}).get("endpoint_url", ""))
    if not parts.hostname:
        return "the S3 endpoint"
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _root_cause(error: BaseException) -> BaseException:
    # boto3 wraps upload ClientErrors in S3UploadFailedError raised inside `except`, so the original is __context__.
    seen = error
    while seen.__cause__ or seen.__context__:
        seen = seen.__cause__ or seen.__context__
    return seen


def translate(error: BaseException, url: S3Url, what: str) -> StorageError:
    """A botocore/boto3 error as one of ours. Messages name the bucket and key, never credentials."""
    from botocore import exceptions as bce

    cause = error if isinstance(error, bce.BotoCoreError | bce.ClientError) else _root_cause(error)
    code = _code(cause)
    if isinstance(cause, bce.NoCredentialsError | bce.PartialCredentialsError):
        return StorageAuthError(
            f"no AWS credentials found for {url}",
            hint="Set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pass --profile.",
        )
    if isinstance(cause, bce.ProfileNotFound):
        return StorageAuthError(f"AWS profile {cause.kwargs.get('profile')!r} not found")
    if code == "NoSuchBucket":
        return BucketNotFoundError(f"bucket {url.bucket!r} does not exist", hint="Check the URL and --endpoint-url.")
    if code in _AUTH_CODES:
        return StorageAuthError(
            f"S3 refused the credentials while trying to {what} ({code})",
            hint="Check the access key, secret, --profile and --region.",
        )
    if isinstance(cause, bce.EndpointConnectionError | bce.ConnectTimeoutError | bce.ConnectionClosedError):
        return StorageError(
            f"cannot reach {_endpoint(cause)} to {what}", hint="Check --endpoint-url, the region and the network."
        )
    if code:
        return StorageError(f"S3 error {code} while trying to {what}")
    return StorageError(f"S3 transfer failed while trying to {what}: {type(cause).__name__}")


@contextlib.contextmanager
def translated(url: S3Url, what: str) -> Iterator[None]:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as error:
        raise translate(error, url, what) from error


class S3Store:
    """Objects under one s3://bucket/prefix, addressed by paths relative to the prefix."""

    def __init__(self, url: S3Url, connection: Connection) -> None:
        import boto3  # lazy: only push/pull need it
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.url = url
        self.connection = connection
        with translated(url, "create an S3 client"):
            session = boto3.session.Session(profile_name=connection.profile, region_name=connection.region)
            # Room for every file and part in flight; botocore's default pool of 10 would serialise them.
            config = Config(
                max_pool_connections=2 * connection.concurrency + 4,
                retries={"mode": "standard"},
                # Integrity is ours end to end (sha256 in the manifest, checked on pull); botocore's extra CRC32 on
                # every request costs ~15% of the client CPU per small object and proves less than the sha256.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            self.client = session.client("s3", endpoint_url=connection.endpoint_url, config=config)
        self._transfer_config = TransferConfig
        self.parts_in_flight = connection.concurrency

    def transfer_config(self):
        size = self.connection.part_size
        return self._transfer_config(
            multipart_threshold=size, multipart_chunksize=size, max_concurrency=max(1, self.parts_in_flight)
        )

    def list(self) -> dict[str, int]:
        """{relative key: size} for every object under the prefix (directory markers end in '/')."""
        objects: dict[str, int] = {}
        with translated(self.url, f"list {self.url}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.url.bucket, Prefix=self.url.list_prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    relative = self.url.relative(item["Key"])
                    if relative:  # the prefix's own marker, if any
                        objects[relative] = item["Size"]
        return objects

    def get_bytes(self, relative: str) -> bytes | None:
        """An object's content, or None when it does not exist."""
        from botocore.exceptions import ClientError

        key = self.url.key(relative)
        with translated(self.url, f"read {key}"):
            try:
                return self.client.get_object(Bucket=self.url.bucket, Key=key)["Body"].read()
            except ClientError as error:
                if _code(error) in _MISSING_CODES:
                    return None
                raise

    def put_bytes(self, relative: str, data: bytes, *, sha256: str | None = None) -> None:
        key = self.url.key(relative)
        with translated(self.url, f"write {key}"):
            metadata = {"sha256": sha256} if sha256 else {}
            self.client.put_object(Bucket=self.url.bucket, Key=key, Body=data, Metadata=metadata)

    def head_sha256(self, relative: str) -> str | None:
        """The sha256 we stored in the object's metadata at upload, or None (missing object, other uploader)."""
        from botocore.exceptions import ClientError

        key = self.url.key(relative)
        with translated(self.url, f"inspect {key}"):
            try:
                return self.client.head_object(Bucket=self.url.bucket, Key=key).get("Metadata", {}).get("sha256")
            except ClientError as error:
                if _code(error) in _MISSING_CODES:
                    return None
                raise

    def exists(self, relative: str) -> bool:
        from botocore.exceptions import ClientError

        key = self.url.key(relative)
        with translated(self.url, f"inspect {key}"):
            try:
                self.client.head_object(Bucket=self.url.bucket, Key=key)
                return True
            except ClientError as error:
                if _code(error) in _MISSING_CODES:
                    return False
                raise

    def upload(self, path: Path, relative: str, *, size: int, sha256: str, callback: Callable[[int], None]) -> None:
        """One PUT below the part size; above it, a multipart upload with parts in parallel (boto3's transfer manager).
        The sha256 rides along as object metadata, so a rerun of an interrupted push can recognise what landed."""
        key = self.url.key(relative)
        extra = {"Metadata": {"sha256": sha256}}
        if size >= CHECKSUM_FROM:
            # The store verifies each request's CRC32 on arrival: a part corrupted in flight fails the push there and
            # then, not the pull later. moto also stores a checksummed part with far less work (a 1.5 GB push: 28 s
            # without, 16 s with). Small objects skip it: per object it costs more client CPU than it saves.
            extra["ChecksumAlgorithm"] = "CRC32"
        with translated(self.url, f"upload {key}"):
            if size < self.connection.part_size:
                data = path.read_bytes()
                self.client.put_object(Bucket=self.url.bucket, Key=key, Body=data, **extra)
                callback(len(data))
                return
            config = self.transfer_config()
            self.client.upload_file(str(path), self.url.bucket, key, ExtraArgs=extra, Callback=callback, Config=config)

    def download(self, relative: str, path: Path, *, size: int, callback: Callable[[int], None]) -> str:
        """Into `path` (which exists: the caller made it with the mode it wants); returns the sha256 of what landed.
        One GET below the part size, hashed as it streams in; above it, ranged GETs in parallel (boto3's transfer
        manager) written straight into the file, where they land out of order, so it is hashed after. Writing into
        our own file, not letting boto3 rename a temp file of its own over it, keeps one part file to clean up."""
        key = self.url.key(relative)
        with translated(self.url, f"download {key}"), path.open("r+b") as handle:
            handle.truncate()
            if size >= self.connection.part_size:
                self.client.download_fileobj(
                    self.url.bucket, key, handle, Callback=callback, Config=self.transfer_config()
                )
                handle.flush()
                return sha256_file(path)
            digest = hashlib.sha256()
            body = self.client.get_object(Bucket=self.url.bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(1 << 20):
                handle.write(chunk)
                digest.update(chunk)
                callback(len(chunk))
            return digest.hexdigest()

    def delete(self, relatives: list[str]) -> None:
        with translated(self.url, f"delete objects under {self.url}"):
            for start in range(0, len(relatives), 1000):  # DeleteObjects takes at most 1000 keys
                batch = [{"Key": self.url.key(r)} for r in relatives[start : start + 1000]]
                result = self.client.delete_objects(Bucket=self.url.bucket, Delete={"Objects": batch, "Quiet": True})
                if result.get("Errors"):
                    first = result["Errors"][0]
                    raise StorageError(f"could not delete {first.get('Key')}: {first.get('Code')}")
