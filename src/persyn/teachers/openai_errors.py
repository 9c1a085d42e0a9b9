"""What a failed request to an OpenAI-compatible server means: for the request pool
(`classify`: retry it? a throttle?) and for the error row (`describe_failure`: one line
saying what failed and what to do)."""

from __future__ import annotations

from persyn.redact import redact_text
from persyn.teachers.pool import Verdict, retry_after

# Statuses that mean "too many requests now": cut the in-flight limit and wait.
THROTTLED = {429, 503}


def classify(err: BaseException) -> Verdict:
    """What a failed request means for the pool: a throttle (429, 503) with the server's
    Retry-After, another failure worth a retry (408, 409, 5xx, timeouts, connection
    errors), or one that no retry mends (400, 401, 404, ...)."""
    import openai

    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        if status in THROTTLED:
            return Verdict(retry=True, throttled=True, wait_s=retry_after(err.response.headers))
        return Verdict(retry=status in {408, 409} or status >= 500)
    return Verdict(retry=isinstance(err, openai.APIConnectionError))  # timeouts included


def describe_failure(
    err: BaseException, tries: int, url: str, timeout_s: float, api_key_env: str | None
) -> str:
    """One line saying what failed and what to do; the API key is scrubbed out."""
    import openai

    if isinstance(err, openai.APITimeoutError):
        message = (
            f"no response from {url} within timeout_s={timeout_s} "
            f"({tries} tries); raise options.timeout_s or check the server's load"
        )
    elif isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err
        message = (
            f"connection to {url} failed after {tries} tries ({type(cause).__name__}: "
            f"{cause}); check the server is up and options.base_url"
        )
    elif isinstance(err, openai.AuthenticationError | openai.PermissionDeniedError):
        name = api_key_env
        message = (
            f"HTTP {err.status_code} from {url}: the server refused the API key; check "
            f"the key in ${name} (options.api_key_env)"
            if name
            else f"HTTP {err.status_code} from {url}: the server wants an API key and "
            "none was sent; export it in an environment variable and name that variable "
            "in options.api_key_env"
        )
    elif isinstance(err, openai.APIStatusError):
        retried = f" after {tries} tries" if tries > 1 else ""
        message = f"HTTP {err.status_code} from {url}{retried}: {err.message}"
    else:
        message = f"{type(err).__name__}: {err}"
    # the key, and credentials in base_url, scrubbed
    return redact_text(" ".join(message.split()))
