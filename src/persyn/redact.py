"""Secrets out of everything persyn writes or prints: one place decides what a secret is.

`redact(obj)` copies a config-like tree with secret values replaced; `redact_text(text)`
scrubs a message. Every artifact that can hold user settings or server messages goes
through them: `config.yaml`, the dataset card, generation and quality error rows, log and
warning lines, and the one-line errors (`StageError`, the CLI's last line).

What counts as a secret:
- the value of a key whose name says so (`api_key`, `token`, `secret`, `password`,
  `Authorization`, `credentials`, ...), but not `max_new_tokens`, `batch_tokens` or
  `api_key_env` (a count, a count, the *name* of a variable);
- credentials inside a URL (`http://user:KEY@host`) and secret-named query parameters
  (`?api_key=...`, `&token=...`);
- strings shaped like API keys (`sk-...`, `hf_...`, `ghp_...`, `AKIA...`, `Bearer ...`, and
  long random-looking base64 runs);
- any value registered with `remember_secret` (the keys read from the environment).
"""

from __future__ import annotations

import re
import threading
from typing import Any

REDACTED = "<redacted>"

# Key names whose values are secrets. Matched on the whole name split at `_`/`-`/case, so
# `max_new_tokens` (a count) and `api_key_env` (a variable's name) stay visible.
_SECRET_WORDS = {
    "key",
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "authorization",
    "auth",
    "credential",
    "credentials",
    "cookie",
    "signature",
    "sig",
}
_NOT_SECRET_SUFFIXES = ("_env", "_tokens", "_file", "_field", "_id", "_ids")

# Shapes of well-known API keys and bearer tokens.
_KEY_SHAPES = re.compile(
    r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}"  # OpenAI, Anthropic (sk-ant-...), many proxies
    r"|\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}"  # Stripe-style
    r"|\bhf_[A-Za-z0-9]{16,}"  # Hugging Face
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}"  # GitHub
    r"|\bglpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack
    r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key id
    r"|\bAIza[0-9A-Za-z_-]{30,}"  # Google
    r"|(?i:\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"
)
# Long runs of base64 letters mixing upper case, lower case and digits: random keys. Paths
# (`/`), ids with `-`/`_` and hex digests (one case) are left alone.
_RANDOM_RUN = re.compile(r"(?<![A-Za-z0-9+])[A-Za-z0-9+]{32,}={0,2}")
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@?#]+)@")
_QUERY_PARAM = re.compile(r"(?P<sep>[?&;])(?P<name>[^=&\s#;]+)=(?P<value>[^&\s#;]*)")

_known: set[str] = set()
_known_lock = threading.Lock()


def is_secret_name(name: str) -> bool:
    """Whether a key's name says its value is a secret (`api_key` yes, `max_new_tokens` no)."""
    # camelCase -> snake_case, then split into words
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(name)).lower().replace("-", "_")
    if snake.endswith(_NOT_SECRET_SUFFIXES):
        return False
    words = [w for w in snake.split("_") if w]
    return any(w in _SECRET_WORDS for w in words) or "".join(words) in _SECRET_WORDS


def looks_like_key(value: str) -> bool:
    """Whether a string is shaped like an API key (used to refuse one pasted in the wrong
    place, e.g. `api_key_env`, which takes the *name* of a variable)."""
    value = value.strip()
    if _KEY_SHAPES.search(value) or _random_run(value):
        return True
    # Variable names are words joined by `_`; a long token of letters and digits is not one.
    return (
        len(value) >= 20
        and "_" not in value
        and bool(re.search(r"\d", value))
        and bool(re.search(r"[A-Za-z]", value))
    )


def remember_secret(value: str | None) -> None:
    """Scrub this exact value from every later message (e.g. a key read from the
    environment, which has no recognisable shape)."""
    if value and len(value) >= 4:
        with _known_lock:
            _known.add(value)


def _random_run(text: str) -> bool:
    return any(_mixed(m.group()) for m in _RANDOM_RUN.finditer(text))


def _mixed(run: str) -> bool:
    return (
        any(c.isupper() for c in run)
        and any(c.islower() for c in run)
        and any(c.isdigit() for c in run)
    )


def _query(m: re.Match[str]) -> str:
    if is_secret_name(m.group("name")) and m.group("value"):
        return f"{m.group('sep')}{m.group('name')}={REDACTED}"
    return m.group()


def redact_text(text: str) -> str:
    """`text` with every secret replaced by `<redacted>`."""
    if not text:
        return text
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        text = text.replace(value, REDACTED)
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    text = _QUERY_PARAM.sub(_query, text)
    text = _KEY_SHAPES.sub(REDACTED, text)
    return _RANDOM_RUN.sub(lambda m: REDACTED if _mixed(m.group()) else m.group(), text)


def redact(obj: Any) -> Any:
    """A copy of a config-like tree (dicts, lists, strings) with secrets replaced: values
    of secret-named keys entirely, secrets inside other strings by `redact_text`."""
    if isinstance(obj, dict):
        return {
            k: REDACTED if is_secret_name(k) and v not in (None, "", {}, []) else redact(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def remember_secrets(obj: Any) -> None:
    """Register the secret values of a config-like tree (see `remember_secret`), so they
    are scrubbed from messages too, whatever their shape."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if is_secret_name(k) and isinstance(v, str):
                remember_secret(v)
            else:
                remember_secrets(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            remember_secrets(v)
    elif isinstance(obj, str):
        for m in _URL_USERINFO.finditer(obj):
            user, _, password = m.group("userinfo").partition(":")
            # a bare user name is not secret (and too common a word to scrub everywhere)
            remember_secret(password or (user if looks_like_key(user) else None))
        for m in _QUERY_PARAM.finditer(obj):
            if is_secret_name(m.group("name")):
                remember_secret(m.group("value"))
