"""CDN backends: where a deploy's files go and how a site switches to them."""

from .base import CDNBackend, PublishError, PublishResult, SourceFile
from .local import LocalCDN

__all__ = ["CDNBackend", "PublishError", "PublishResult", "SourceFile", "LocalCDN"]
