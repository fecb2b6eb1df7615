"""Object storage: push a built repository to s3://bucket/prefix and pull it back, incrementally and verified."""

from tritonrepo.storage.sync import TransferSummary, format_summary
from tritonrepo.storage.transfer import TransferOptions, pull, push
from tritonrepo.storage.url import S3Url, parse_s3_url

__all__ = ["S3Url", "TransferOptions", "TransferSummary", "format_summary", "parse_s3_url", "pull", "push"]
