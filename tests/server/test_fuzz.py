"""Property test against a live server: any sequence of commands with hostile arguments gets
well-formed replies, never kills the session, and never touches anything outside the home."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fsftpd
from fsftpd.protocol.commands import COMMANDS
from tests.harness import running_server
from tests.server.rawftp import Raw

VERBS = [*sorted(set(COMMANDS) - {"QUIT"}), "FOO", "SITE", "ACCT"]

_hostile = st.sampled_from(
    [
        "",
        " ",
        "..",
        "../..",
        "/..",
        "../outside/secret",
        "..\\..\\outside",
        "//",
        "\\",
        "link-out",
        "link-out/x",
        "a b",
        "\u00e9t\u00e9",
        "-la",
        "-la ..",
        "20200101000000 ../outside/secret",
        "ALL",
        "1",
        "2",
        "127,0,0,1,4,1",
        "|1|127.0.0.1|1025|",
        "|2|::1|1025|",
        "A",
        "I",
        "L 8",
        "UTF8 ON",
        "MLST type;",
        "999999999999",
    ]
)
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=40)
_command = st.tuples(
    st.sampled_from(VERBS), st.one_of(_hostile, _text, st.tuples(_hostile, _text).map("/".join))
)


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_random_command_sequences(tmp_path: Path) -> None:
    home = tmp_path / "home"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"TOPSECRET")
    home.mkdir()
    (home / "link-out").symlink_to(outside)
    (home / "file").write_bytes(b"data")
    before = _snapshot(outside)
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with (
        running_server(
            [user], wait_future_timeout=0.05, failed_login_delay=0, max_login_attempts=10**9
        ) as srv,
        Raw(srv.host, srv.port) as raw,
    ):

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(_command, min_size=1, max_size=8))
        def run(commands: list[tuple[str, str]]) -> None:
            raw.cmd("REIN")
            raw.login("alice", "secret")
            for verb, arg in commands:
                code, text = raw.cmd(f"{verb} {arg}" if arg else verb)
                assert 200 <= code < 600 or code == 150, (verb, arg, code, text)
                if code == 150:  # a transfer whose data connection never comes
                    code, text = raw.read()
                    assert code in (425, 426), (verb, arg, code, text)
                assert b"TOPSECRET" not in text.encode()
            assert raw.code("NOOP") == 200

        run()
        # The session survived everything and the server still takes new clients.
        with Raw(srv.host, srv.port) as fresh:
            assert fresh.greeting[0] == 220
    assert _snapshot(outside) == before
