"""Hiding secrets (API keys, signed URLs' query strings) in text that may be logged or raised."""

from __future__ import annotations


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``; empty or ``None`` secrets are skipped.

    Longer secrets are replaced first, so a secret that contains another is hidden whole.
    """
    for secret in sorted((secret for secret in secrets if secret), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
