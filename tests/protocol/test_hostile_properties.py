"""Hostile input against the pure layers: whatever bytes arrive, the parser raises nothing
but the protocol's own errors, and no path a client can name maps outside the home."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from fsftpd.auth.users import Permission, User
from fsftpd.protocol.commands import Command, lookup, parse_line, strip_telnet
from fsftpd.protocol.errors import FtpError
from fsftpd.protocol.paths import is_within, resolve
from fsftpd.storage.local import PathIO

_telnet = st.lists(st.sampled_from([b"\xff\xfb\x18", b"\xff\xfd\x01", b"\xff\xfc\x05", b"\xff\xf4",
                                    b"\xff\xf2", b"\xff\xfa\x18\x00vt100\xff\xf0", b"\xff", b"\xf2"]),
                   max_size=4).map(b"".join)
_verbs = st.sampled_from([b"USER", b"PASS", b"RETR", b"STOR", b"CWD", b"LIST", b"PORT", b"EPRT",
                          b"REST", b"MLST", b"SITE", b"XYZ", b"retr", b""])
_line = st.one_of(
    st.binary(max_size=300),
    st.tuples(_telnet, _verbs, st.sampled_from([b"", b" "]), st.binary(max_size=60),
              st.sampled_from([b"", b"\r\n", b"\n", b"\r"])).map(b"".join),
)


@given(_line)
@settings(max_examples=1500)
def test_any_line_parses_or_raises_a_protocol_error(line: bytes) -> None:
    try:
        command = parse_line(line)
    except FtpError as exc:
        assert exc.reply.code in (500, 501)
        return
    assert isinstance(command, Command)
    assert (command.verb == "" and command.telnet) or (command.verb.isalpha() and command.verb.isupper())
    assert "\x00" not in command.arg
    if command.telnet:  # only refusals go back: IAC WONT/DONT x
        assert len(command.telnet) % 3 == 0
        assert all(command.telnet[i] == 0xFF and command.telnet[i + 1] in (0xFC, 0xFE)
                   for i in range(0, len(command.telnet), 3))
    if command.verb:
        try:
            lookup(command)
        except FtpError as exc:
            assert exc.reply.code in (500, 501, 502)


@given(st.binary(max_size=200))
def test_strip_telnet_returns_a_suffix(line: bytes) -> None:
    rest, answer = strip_telnet(line)
    assert line.endswith(rest)
    assert len(answer) <= len(line)


_segment = st.one_of(st.sampled_from(["..", ".", "", "...", "..\\..", "a", "b c", "\u00e9", "~"]),
                     st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                             max_size=8))
_path = st.lists(_segment, max_size=8).map("/".join) | st.lists(_segment, max_size=8).map("\\".join)


@given(_path, _path)
@settings(max_examples=1000)
def test_no_path_maps_outside_the_home(cwd_arg: str, arg: str) -> None:
    cwd = resolve("/", cwd_arg)
    target = resolve(cwd, arg)
    assert target.startswith("/") and is_within(target, "/")
    assert ".." not in target.split("/") and "\\" not in target
    io = PathIO("/srv/ftp/home")
    real = os.path.normpath(io._real(target))
    assert real == io.root or real.startswith(io.root + os.sep)


@given(_path)
def test_a_user_confined_by_permission_stays_in_its_subtree(arg: str) -> None:
    user = User("bob", "pw", permissions=[Permission("/pub"), Permission("/pub/ro", writable=False)])
    target = resolve("/pub", arg)
    inside = target == "/pub" or target.startswith("/pub/")
    assert user.can_read(target) == inside
    assert user.can_write(target) == (inside and not (target == "/pub/ro" or target.startswith("/pub/ro/")))
