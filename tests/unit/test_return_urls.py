"""Return URL rules (`engine.return_urls`): what an app may list, what a purchase may use,
and every hostile spelling of a script scheme refused."""

from __future__ import annotations

import pytest

from revenipe.engine.errors import ErrorCode, RevenipeError
from revenipe.engine.return_urls import check_list, check_listed, check_return_url

LIST = ("myapp://paid", "myapp://cancel", "https://example.com/return/*", "other://*")

HOSTILE = [
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "JAVASCRIPT:alert(1)",
    " javascript:alert(1)",
    "javascript:alert(1) ",
    "\tjavascript:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "java\x00script:alert(1)",
    "\x01javascript:alert(1)",
    "javascript\u2028:alert(1)",
    "\u00a0javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "DATA:text/html;base64,PHNjcmlwdD4=",
    "file:///etc/passwd",
    "FiLe://host/share",
    "vbscript:msgbox(1)",
    "VBScript:msgbox(1)",
    "myapp://pa id",
    "myapp://paid\r\nSet-Cookie: x=1",
    "//evil.test/",
    "/relative/path",
    "no scheme",
    "",
    "x" * 2049,
]


@pytest.mark.parametrize("url", HOSTILE)
def test_hostile_urls_are_never_listed_nor_accepted(url: str) -> None:
    with pytest.raises(RevenipeError) as listed:
        check_listed(url)
    assert listed.value.code is ErrorCode.INVALID_ARGUMENT
    for allowed in ((), LIST, ("javascript:*",)):
        with pytest.raises(RevenipeError) as sent:
            check_return_url(url, "success_url", allowed)
        assert sent.value.code is ErrorCode.INVALID_ARGUMENT
        assert sent.value.field == "success_url"


@pytest.mark.parametrize("value", [5, None, ["myapp://x"], b"myapp://x"])
def test_entries_must_be_strings(value: object) -> None:
    with pytest.raises(RevenipeError) as raised:
        check_list([value])
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT
    assert raised.value.field == "return_urls[0]"


@pytest.mark.parametrize(
    "entry",
    [
        "https://example.com*",  # would match https://example.com.evil.test
        "https://*",
        "https:///path/*",
        "http://example.com*",
        "*",
        "myapp:*",
        "myapp://pa*id",
        "myapp://*/*",
    ],
)
def test_prefixes_must_not_be_wider_than_they_look(entry: str) -> None:
    with pytest.raises(RevenipeError) as raised:
        check_listed(entry)
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT


def test_a_list_is_checked_whole_and_deduplicated() -> None:
    assert check_list(["myapp://paid", "https://example.com/return/*", "myapp://paid"]) == (
        "myapp://paid",
        "https://example.com/return/*",
    )
    assert check_list([]) == ()
    with pytest.raises(RevenipeError):
        check_list("myapp://paid")
    with pytest.raises(RevenipeError):
        check_list([f"myapp://{i}" for i in range(51)])
    with pytest.raises(RevenipeError) as raised:
        check_list(["myapp://paid", "javascript:alert(1)"])
    assert raised.value.field == "return_urls[1]"


@pytest.mark.parametrize(
    "url",
    [
        "myapp://paid",
        "https://example.com/return/",
        "https://example.com/return/done?session={CHECKOUT_SESSION_ID}",
        "other://anything/at/all",
        "myapp://paid?session=cs_1",
        "myapp://paid#done",
    ],
)
def test_urls_on_the_list_are_accepted(url: str) -> None:
    assert check_return_url(url, "success_url", LIST) == url


@pytest.mark.parametrize(
    "url",
    [
        "myapp://paid2",
        "myapp://paid/",
        "myapp://paid.evil",
        "myapp://pai",
        "MYAPP://paid",
        "https://example.com/return",  # the prefix is /return/
        "https://example.com.evil.test/return/",
        "https://evil.test/",
        "http://example.com/return/x",
    ],
)
def test_urls_off_the_list_are_refused(url: str) -> None:
    with pytest.raises(RevenipeError) as raised:
        check_return_url(url, "cancel_url", LIST)
    assert raised.value.code is ErrorCode.RETURN_URL_NOT_ALLOWED
    assert raised.value.field == "cancel_url"


def test_an_entry_with_its_own_query_matches_exactly() -> None:
    allowed = ("myapp://paid?x=1",)
    assert check_return_url("myapp://paid?x=1", "success_url", allowed) == "myapp://paid?x=1"
    for url in ("myapp://paid?x=1&y=2", "myapp://paid?x=1#z", "myapp://paid"):
        with pytest.raises(RevenipeError):
            check_return_url(url, "success_url", allowed)


def test_without_a_list_http_urls_only() -> None:
    assert check_return_url(None, "success_url", ()) is None
    assert check_return_url("https://app.example/x", "success_url", ()) == "https://app.example/x"
    assert check_return_url("HTTP://app.example/x", "success_url", ()) == "HTTP://app.example/x"
    for url in ("myapp://paid", "ftp://files.example/", "https:no-slashes"):
        with pytest.raises(RevenipeError) as raised:
            check_return_url(url, "success_url", ())
        assert raised.value.code is ErrorCode.RETURN_URL_NOT_ALLOWED
