"""The one redaction of secrets (domainqa/redaction.py): API keys and the credentials a URL carries, in every
form a message may quote them. The real commands are checked in tests/test_faults.py."""

import base64

import pytest

from augment.backends import split_query
from domainqa.redaction import Redactor, redact_url, url_secrets


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://user:s3cret-pw@host:8443/v1", "https://***@host:8443/v1"),
        ("https://tok-123456@host/v1", "https://***@host/v1"),
        ("https://host/v1?api_key=abcd1234&api-version=2024", "https://host/v1?api_key=***&api-version=2024"),
        (
            "https://host/v1?token=zz&access_token=yy&sig=x1&mode=a",
            "https://host/v1?token=***&access_token=***&sig=***&mode=a",
        ),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("http://[::1/v1", "http://***"),  # not parseable: only the scheme is kept
    ],
)
def test_urls_keep_their_address_and_lose_their_credentials(url, shown):
    assert redact_url(url) == shown


def test_every_form_of_a_url_credential_is_masked_in_free_text():
    url = "http://user:p%40ss-w0rd@host/v1?api_key=k%2By-12345"
    redact = Redactor.for_server("sk-the-api-key-0", url)
    basic = base64.b64encode(b"user:p@ss-w0rd").decode()
    text = f"cannot reach {url}: p%40ss-w0rd / p@ss-w0rd / Basic {basic} / k%2By-12345 / k+y-12345 / sk-the-api-key-0"
    masked = redact(text)
    for secret in ("p%40ss-w0rd", "p@ss-w0rd", basic, "k%2By-12345", "k+y-12345", "sk-the-api-key-0"):
        assert secret not in masked
    assert masked.startswith("cannot reach http://***@host/v1?api_key=***: ")
    assert redact("any other http://a:b-secret@elsewhere/x") == "any other http://***@elsewhere/x"
    assert url_secrets("http://host/v1") == [] and url_secrets(None) == []


def test_a_query_in_the_base_url_is_sent_as_the_clients_default_query():
    assert split_query("http://host/v1?api_key=K1&x=2") == ("http://host/v1", {"api_key": "K1", "x": "2"})
    assert split_query("http://host/v1") == ("http://host/v1", None)
    assert split_query(None) == (None, None)
