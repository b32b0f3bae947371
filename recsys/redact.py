"""Credentials out of everything the job writes down: a `duckdb:` source spec may carry a
token, a password or a URL with a user's password, and the spec becomes runs.source, log
lines, ledger messages, error lines and the report."""

from __future__ import annotations

import re

HIDDEN = "***"
# https://user:password@host -> https://user:***@host
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^/\s:@'\"]+):[^@\s'\"]+@")
# token=..., s3_secret_access_key=..., password=... (URL queries, connection strings)
_KEY_VALUE = re.compile(
    r"(?i)\b([\w.-]*(?:token|secret|password|passwd|pwd|api_?key|access_?key|key_?id)[\w.-]*)"
    r"(\s*[=:]\s*)('[^']*'|\"[^\"]*\"|(?:(?!::)[^&\s'\";,)])+)"
)
# SQL options: SECRET 'x', PASSWORD 'x', TOKEN 'x', KEY_ID 'x'
_SQL_OPTION = re.compile(r"(?i)\b(secret|password|token|key_id|session_token)(\s+)'[^']*'")


def redact(text: str) -> str:
    """`text` with anything that looks like a credential replaced by ***."""
    text = _URL_PASSWORD.sub(rf"\1:{HIDDEN}@", text)
    text = _KEY_VALUE.sub(rf"\1\2{HIDDEN}", text)
    return _SQL_OPTION.sub(rf"\1\2'{HIDDEN}'", text)
