"""paths.resolve: every client path becomes a clamped, normalised virtual path."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fsftpd.protocol import paths
from fsftpd.protocol.errors import FtpError


@pytest.mark.parametrize(
    ("cwd", "arg", "expected"),
    [
        ("/", "a", "/a"),
        ("/", "/a/b", "/a/b"),
        ("/a", "b", "/a/b"),
        ("/a", "/b", "/b"),  # absolute paths are relative to the user's root, not the disk's
        ("/a/b", "..", "/a"),
        ("/a/b", "../..", "/"),
        ("/a/b", "../../../../..", "/"),  # clamped at the root
        ("/", "..", "/"),
        ("/", "../etc/passwd", "/etc/passwd"),
        ("/", "/../../etc/passwd", "/etc/passwd"),
        ("/a", "b/../../../c", "/c"),
        ("/", "a//b///c", "/a/b/c"),  # repeated slashes
        ("/", "//a", "/a"),
        ("/", "./a/./b/.", "/a/b"),
        ("/", "a\\b", "/a/b"),  # backslashes are separators
        ("/", "..\\..\\etc\\passwd", "/etc/passwd"),
        ("/a", "\\", "/"),
        ("/", "C:\\Windows", "/C:/Windows"),
        ("/", "name with spaces", "/name with spaces"),
        ("/", " lead", "/ lead"),
        ("/", "\u65e5\u672c/\u00e9", "/\u65e5\u672c/\u00e9"),
        ("/", "...", "/..."),  # three dots is a normal name
        ("/", "..a", "/..a"),
        ("/x", "", "/x"),
        ("/x", ".", "/x"),
        ("/", "/", "/"),
    ],
)
def test_resolve(cwd: str, arg: str, expected: str) -> None:
    assert paths.resolve(cwd, arg) == expected


@pytest.mark.parametrize("arg", ["a\x00b", "\x00", "../\x00/etc"])
def test_resolve_refuses_nul(arg: str) -> None:
    with pytest.raises(FtpError) as info:
        paths.resolve("/", arg)
    assert info.value.reply.code == 501


_segment = st.one_of(
    st.sampled_from(["..", ".", "", "a", "b c", "\u00e9", "...", "\\", "..\\..", "/"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8),
)
_path_arg = st.lists(_segment, max_size=12).map("/".join) | st.lists(_segment, max_size=12).map("\\".join)


def _valid(path: str) -> None:
    assert path.startswith("/")
    assert "\\" not in path and "\x00" not in path
    if path != "/":
        segments = path[1:].split("/")
        assert all(s not in ("", ".", "..") for s in segments), path


@given(_path_arg, _path_arg)
def test_resolve_is_always_clamped_and_normal(cwd_arg: str, arg: str) -> None:
    cwd = paths.resolve("/", cwd_arg)
    _valid(cwd)
    result = paths.resolve(cwd, arg)
    _valid(result)
    # Idempotent: a resolved path resolves to itself from anywhere.
    assert paths.resolve("/elsewhere", result) == result
    assert paths.resolve(result, ".") == result


@given(_path_arg)
def test_dotdot_never_escapes(arg: str) -> None:
    # However many ".." a path has, the result stays below "/" and is a real descendant
    # of the segments that were actually named.
    result = paths.resolve("/", "../" * 20 + arg)
    _valid(result)


@given(_path_arg, _path_arg)
def test_relative_resolution_matches_joining(cwd_arg: str, arg: str) -> None:
    assume(not arg.startswith(("/", "\\")))
    cwd = paths.resolve("/", cwd_arg)
    assert paths.resolve(cwd, arg) == paths.resolve("/", cwd + "/" + arg)


def test_helpers() -> None:
    assert paths.parent("/a/b") == "/a"
    assert paths.parent("/a") == "/"
    assert paths.parent("/") == "/"
    assert paths.name("/a/b c") == "b c"
    assert paths.name("/") == ""
    assert paths.join("/", "x") == "/x"
    assert paths.join("/a", "x") == "/a/x"
    assert paths.is_within("/a/b", "/a")
    assert paths.is_within("/a", "/a")
    assert not paths.is_within("/ab", "/a")
    assert paths.is_within("/anything", "/")
