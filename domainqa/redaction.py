"""Removing secrets from text before it reaches a log, a file or an error message: API keys, and the
credentials a URL may carry (`https://user:password@host/v1`, `?api_key=...`, `?token=...`).

`Redactor` is the one place that does it; whatever logs or writes a server address or an error that may
quote one passes through it (augment's OpenAI-compatible backend, the Hub endpoint in domainqa/hub_access.py).
"""

from __future__ import annotations

import base64
import re
import urllib.parse

MASK = "***"
# Query parameters that carry credentials: api_key, api-key, key, token, access_token, sig, password, ...
_SECRET_PARAM = re.compile(r"key|token|secret|pass|auth|sig|cred", re.IGNORECASE)
# A URL in free text ends before spaces and quotes, and before punctuation that closes a sentence or a clause.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]*[^\s'\"<>`.,:;)\]]")
_SHORTEST_SECRET = 4  # shorter strings would mask ordinary words


def _secret_params(query: str) -> list[tuple[str, str]]:
    """(name, value as written) of each query parameter that carries a credential."""
    pairs = (item.partition("=") for item in query.split("&"))
    return [(name, value) for name, eq, value in pairs if eq and value and _SECRET_PARAM.search(name)]


def redact_url(url: str) -> str:
    """`url` with its user information and the values of credential parameters masked; the host, path and
    other parameters stay, so that the address can still be told apart."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # not parseable (a broken IPv6 host): keep only the scheme
        return url.split("://", 1)[0] + "://" + MASK
    netloc = f"{MASK}@{parts.netloc.rsplit('@', 1)[1]}" if "@" in parts.netloc else parts.netloc
    secret = dict(_secret_params(parts.query))
    query = "&".join(
        f"{item.partition('=')[0]}={MASK}" if item.partition("=")[0] in secret else item
        for item in parts.query.split("&")
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query if parts.query else "", parts.fragment))


def url_secrets(url: str | None) -> list[str]:
    """The credentials inside `url`, each as written, decoded, and as a Basic auth header carries them, so
    that a message quoting any form of them can be masked."""
    if not url:
        return []
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return [url]
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        user, _, password = userinfo.partition(":")
        plain = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
        found += [userinfo, password, urllib.parse.unquote(password), base64.b64encode(plain.encode()).decode()]
    for _, value in _secret_params(parts.query):
        found += [value, urllib.parse.unquote_plus(value)]
    return [s for s in dict.fromkeys(found) if len(s) >= _SHORTEST_SECRET]


class Redactor:
    """Removes secrets from any text that may reach a log, a file or an error message: the strings it was
    given (an API key, the credentials of a base URL) wherever they appear, and the credentials of every
    URL in the text."""

    def __init__(self, *secrets: str | None):
        self.secrets = sorted({s for s in secrets if s and len(s) >= _SHORTEST_SECRET}, key=len, reverse=True)

    @classmethod
    def for_server(cls, api_key: str | None, base_url: str | None) -> Redactor:
        """What a client of `base_url` with `api_key` must never show."""
        return cls(api_key, *url_secrets(base_url))

    def __call__(self, text: object) -> str:
        text = _URL.sub(lambda match: redact_url(match.group(0)), str(text))
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text
