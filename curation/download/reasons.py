"""Outcome vocabulary of one download: the sidecar's `status` and `error_message` reason codes.

Every failure is a `DownloadFailure` carrying a short reason code (e.g. "http_404", "timeout");
the code alone decides the row's status and whether the failure is worth retrying later.

The statuses are img2dataset's three, so successes plus failed_to_* add up to the input. URLs
we declined to fetch (address policy, robots.txt, opt-out headers) are failed_to_download with
their reason in error_message; `is_refusal` tells them apart.
"""

from __future__ import annotations

SUCCESS = "success"
FAILED_TO_DOWNLOAD = "failed_to_download"
FAILED_TO_RESIZE = "failed_to_resize"

# We declined to fetch: the address, robots.txt or the server's opt-out header said no.
FORBIDDEN_ADDRESS = "forbidden_address"
ROBOTS_DISALLOWED = "robots_disallowed"
ROBOTS_UNREACHABLE = "robots_unreachable"
X_ROBOTS_TAG = "x_robots_tag"
REFUSAL_REASONS = frozenset(
    {FORBIDDEN_ADDRESS, ROBOTS_DISALLOWED, ROBOTS_UNREACHABLE, X_ROBOTS_TAG}
)

# The bytes arrived but are not a usable image.
DECOMPRESSION_BOMB = "decompression_bomb"
CORRUPT_IMAGE = "corrupt_image"
TRUNCATED_IMAGE = "truncated"
RESIZE_REASONS = frozenset({DECOMPRESSION_BOMB, CORRUPT_IMAGE})

# Network-level failures (the rest of failed_to_download).
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
DNS_ERROR = "dns_error"
TOO_LARGE = "too_large"
TRUNCATED = "truncated"
NOT_AN_IMAGE = "not_an_image"
REDIRECT_LOOP = "redirect_loop"
TOO_MANY_REDIRECTS = "too_many_redirects"
BAD_URL = "bad_url"
UNSUPPORTED_SCHEME = "unsupported_scheme"
PROTOCOL_ERROR = "protocol_error"


def http_reason(status_code: int) -> str:
    return f"http_{status_code}"


def is_transient(reason: str) -> bool:
    """Failures that may succeed later: worth an immediate retry with backoff, and `--retry-failed`."""
    if reason in (TIMEOUT, CONNECTION_ERROR, ROBOTS_UNREACHABLE):
        return True
    if reason.startswith("http_") and reason[5:].isdigit():
        code = int(reason[5:])
        return code == 429 or code == 408 or code >= 500
    return False


def is_retryable_later(reason: str) -> bool:
    """What `--retry-failed` re-attempts: transient failures plus DNS errors and cut-off bodies."""
    return is_transient(reason) or reason in (DNS_ERROR, TRUNCATED)


def is_refusal(reason: str | None) -> bool:
    """We declined to fetch (the URL's status is failed_to_download)."""
    return reason in REFUSAL_REASONS


def status_of(reason: str | None, *, decoding: bool = False) -> str:
    """The sidecar status for a reason code; `decoding` marks failures raised after the download."""
    if reason is None:
        return SUCCESS
    if is_refusal(reason):
        return FAILED_TO_DOWNLOAD
    if decoding or reason in RESIZE_REASONS:
        return FAILED_TO_RESIZE
    return FAILED_TO_DOWNLOAD


class DownloadFailure(Exception):
    """One URL could not be turned into a sample; `reason` is the sidecar's reason code."""

    def __init__(self, reason: str, detail: str = "", *, retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        self.retried_reasons: list[str] = []  # transient failures seen before this final one
