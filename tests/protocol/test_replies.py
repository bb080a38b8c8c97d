"""Reply encoding (RFC 959 4.2): single and multi-line forms, always CRLF-terminated."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fsftpd.protocol.replies import Reply, encode_reply, quote_path


def test_single_line() -> None:
    assert Reply(200, "OK").encode() == b"200 OK\r\n"
    assert Reply(200).encode() == b"200 \r\n"


def test_multi_line() -> None:
    assert Reply(211, "Features:", " UTF8", "End").encode() == b"211-Features:\r\n UTF8\r\n211 End\r\n"


def test_embedded_newlines_split_into_lines() -> None:
    reply = Reply(213, "Status:\nline\r\nEnd")
    assert reply.lines == ("Status:", "line", "End")
    assert reply.encode() == b"213-Status:\r\nline\r\n213 End\r\n"


def test_inner_line_that_looks_final_is_indented() -> None:
    encoded = Reply(213, "Status", "213 not the end", "End").encode()
    assert encoded == b"213-Status\r\n 213 not the end\r\n213 End\r\n"


def test_utf8_and_surrogate_escaped_names() -> None:
    assert Reply(257, '"/\u00e9t\u00e9" created').encode() == '257 "/\u00e9t\u00e9" created\r\n'.encode()
    # A local file name that was not UTF-8 arrives surrogate-escaped and leaves as its bytes.
    assert Reply(250, "x\udcff").encode() == b"250 x\xff\r\n"


def test_quote_path() -> None:
    assert quote_path("/a") == '"/a"'
    assert quote_path('/say "hi"') == '"/say ""hi"""'


def _final_line_count(encoded: bytes, code: int) -> int:
    return sum(1 for line in encoded.split(b"\r\n") if line.startswith(f"{code} ".encode()))


@given(
    st.integers(min_value=100, max_value=599),
    st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30), min_size=1, max_size=6),
)
def test_encoding_is_always_well_formed(code: int, lines: list[str]) -> None:
    encoded = Reply(code, *lines).encode()
    assert encoded.endswith(b"\r\n")
    body = encoded[:-2].split(b"\r\n")
    # Exactly one final line, and it is the last one.
    assert body[-1].startswith(f"{code} ".encode())
    assert _final_line_count(encoded, code) == 1
    if len(body) > 1:
        assert body[0].startswith(f"{code}-".encode())
    assert b"\r" not in b"".join(body) and b"\n" not in b"".join(body)


def test_encode_reply_accepts_lists() -> None:
    assert encode_reply(200, ["a"]) == b"200 a\r\n"
    assert encode_reply(200, []) == b"200 \r\n"
