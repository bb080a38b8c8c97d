"""Name patterns and the sort window of listings (pure: no loop, no storage)."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsftpd.protocol.selection import SortWindow, by_name, entry_prefix, is_pattern, name_matcher

NAMES = ["f1.txt", "f2.txt", "f10.txt", "F3.TXT", ".hidden.txt", "a*b", "a[1]", "a1", "notes", "x.txt.bak"]


@pytest.mark.parametrize(
    ("pattern", "matched"),
    [
        ("*.txt", ["f1.txt", "f2.txt", "f10.txt"]),  # case-sensitive; dot files need a leading dot
        ("f?.txt", ["f1.txt", "f2.txt"]),
        ("f[0-9]*", ["f1.txt", "f2.txt", "f10.txt"]),
        ("[!f]*", ["F3.TXT", "a*b", "a[1]", "a1", "notes", "x.txt.bak"]),
        ("*", [n for n in NAMES if not n.startswith(".")]),
        (".*", [".hidden.txt"]),
        ("a[*]b", ["a*b"]),  # a bracket makes "*" literal
        ("a[[]1]", ["a[1]"]),
        ("a[1]", ["a1"]),  # as a pattern: the class [1]
        ("*.TXT", ["F3.TXT"]),
        ("nothing*", []),
    ],
)
def test_name_matcher(pattern: str, matched: list[str]) -> None:
    match = name_matcher(pattern)
    assert [n for n in NAMES if match(n)] == matched


@given(st.text(alphabet="ab*?[]!.-x", max_size=8), st.text(alphabet="ab*?[]!.-x\n", max_size=8))
def test_name_matcher_is_fnmatchcase_except_for_leading_dots(pattern: str, name: str) -> None:
    hidden = name.startswith(".") and not pattern.startswith(".")
    assert name_matcher(pattern)(name) == (fnmatch.fnmatchcase(name, pattern) and not hidden)


@pytest.mark.parametrize(
    ("name", "pattern"),
    [("*.txt", True), ("f?", True), ("[ab]", True), ("a*b", True), ("plain.txt", False), ("a]b", False),
     ("", False), ("{a,b}", False)],
)
def test_is_pattern(name: str, pattern: bool) -> None:
    assert is_pattern(name) is pattern


@pytest.mark.parametrize(
    ("arg", "prefix"),
    [("*.txt", ""), ("dir/*.txt", "dir/"), ("/a/b/*.csv", "/a/b/"), ("dir\\*.txt", "dir\\"), ("./*", "./")],
)
def test_entry_prefix_is_the_directory_part_as_written(arg: str, prefix: str) -> None:
    assert entry_prefix(arg) == prefix


def _run(window: SortWindow[str], batches: list[list[str]]) -> list[str]:
    out: list[str] = []
    for batch in batches:
        out += window.add(batch)
    return out + window.finish()


def test_window_sorts_a_stream_that_fits() -> None:
    window: SortWindow[str] = SortWindow(5, str)
    assert window.add(["d", "b"]) == [] and window.add(["e", "a", "c"]) == []
    assert window.holding
    assert window.finish() == ["a", "b", "c", "d", "e"]
    assert window.peak == 5 and not window.holding


def test_window_keeps_arrival_order_past_its_limit_and_holds_no_more() -> None:
    window: SortWindow[str] = SortWindow(4, str)
    assert window.add(["d", "b", "e"]) == []
    assert window.add(["a", "c"]) == ["d", "b", "e", "a", "c"]  # outgrown: as they came
    assert not window.holding
    assert window.add(["z", "y"]) == ["z", "y"]  # the rest streams through
    assert window.finish() == []
    assert window.peak == 5  # limit + 1 at most


def test_window_limit_zero_never_sorts_nor_holds() -> None:
    window: SortWindow[str] = SortWindow(0, str)
    assert window.add(["b", "a"]) == ["b", "a"] and window.finish() == [] and window.peak == 0
    with pytest.raises(ValueError):
        SortWindow(-1, str)


@given(st.lists(st.lists(st.text(max_size=3), max_size=5), max_size=6), st.integers(0, 12))
def test_window_passes_every_item_once(batches: list[list[str]], limit: int) -> None:
    flat = [x for batch in batches for x in batch]
    out = _run(SortWindow(limit, str), batches)
    assert out == (sorted(flat) if limit > 0 and len(flat) <= limit else flat)


def test_by_name_is_code_point_order() -> None:
    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

    names = ["b", "B", "a", "_", "\u00e9", "10", "9"]
    assert sorted(names, key=lambda n: by_name(Named(n))) == ["10", "9", "B", "_", "a", "b", "\u00e9"]
