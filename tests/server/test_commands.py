"""Every command of the engine with its reply codes, over a real socket (RFC 959, 2389, 2428,
3659). Exact bytes go through :class:`tests.server.rawftp.Raw`; transfers through ftplib."""

from __future__ import annotations

import io
import os
import re
import socket
import time
from pathlib import Path

import pytest

import fsftpd
from fsftpd.protocol.commands import COMMANDS, Arg
from fsftpd.server.connection import HANDLERS
from tests.harness import ServerThread, running_server
from tests.server.rawftp import Raw, recv_all


def login(srv: ServerThread, user: str = "alice", password: str = "secret") -> Raw:
    raw = Raw(srv.host, srv.port)
    raw.login(user, password)
    return raw


def test_every_spec_has_a_handler() -> None:
    for verb, spec in COMMANDS.items():
        assert spec.handler in HANDLERS, verb


def test_greeting_and_login(server: ServerThread) -> None:
    with Raw(server.host, server.port) as raw:
        assert raw.greeting == (220, "fsftpd ready")
        assert raw.code("USER alice") == 331
        assert raw.code("PASS secret") == 230
        assert raw.code("USER bob") == 503  # already logged in
        assert raw.code("PASS again") == 503


def test_bad_logins(home: Path) -> None:
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with (
        running_server([user], failed_login_delay=0, max_login_attempts=3) as srv,
        Raw(srv.host, srv.port) as raw,
    ):
        assert raw.code("PASS secret") == 503  # PASS without USER
        assert raw.code("PWD") == 530
        assert raw.code("USER alice") == 331
        assert raw.code("PASS wrong") == 530
        assert raw.code("PASS secret") == 503  # the failed PASS consumed the USER
        assert raw.code("USER nobody") == 331  # do not reveal which users exist
        assert raw.code("PASS secret") == 530
        assert raw.code("USER alice") == 331
        assert raw.code("PASS wrong") == 421  # third failure closes the connection
        assert raw.file.readline() == b""


def test_login_required(server: ServerThread) -> None:
    with Raw(server.host, server.port) as raw:
        for verb, spec in sorted(COMMANDS.items()):
            if not spec.login:
                continue
            arg = " x" if spec.arg is Arg.REQUIRED else ""
            assert raw.code(f"{verb}{arg}") == 530, verb
        # ...and these work without logging in.
        assert raw.code("NOOP") == 200
        assert raw.code("SYST") == 215
        assert raw.code("FEAT") == 211
        assert raw.code("HELP") == 214
        assert raw.code("OPTS UTF8 ON") == 200


def test_quit(server: ServerThread) -> None:
    with Raw(server.host, server.port) as raw:
        assert raw.code("QUIT") == 221
        assert raw.file.readline() == b""


def test_rein(server: ServerThread, home: Path) -> None:
    (home / "d").mkdir()
    with login(server) as raw:
        assert raw.code("CWD d") == 250
        assert raw.code("TYPE A") == 200
        assert raw.code("REIN") == 220
        assert raw.code("PWD") == 530
        raw.login("alice", "secret")
        assert raw.cmd("PWD") == (257, '"/" is the current directory')
        assert "TYPE: BINARY" in raw.cmd("STAT")[1]


def test_noop_syst_help(server: ServerThread) -> None:
    with login(server) as raw:
        assert raw.cmd("NOOP")[0] == 200
        assert raw.cmd("SYST") == (215, "UNIX Type: L8")
        code, text = raw.cmd("HELP")
        assert code == 214 and "RETR" in text and "MLSD" in text
        code, text = raw.cmd("HELP retr")
        assert code == 214 and text.startswith("RETR")
        assert raw.code("HELP FOOBAR") == 501


def test_feat_lists_exactly_what_is_implemented(server: ServerThread) -> None:
    with login(server) as raw:
        code, text = raw.cmd("FEAT")
        assert code == 211
        lines = text.split("\n")
        assert lines[0] == "Features:" and lines[-1] == "End"
        features = [line.strip() for line in lines[1:-1]]
        assert all(line.startswith(" ") for line in lines[1:-1])  # RFC 2389 3.2
        assert sorted(features) == sorted(
            [
                "EPRT",
                "EPSV",
                "MDTM",
                "MFMT",
                "MLST type*;size*;modify*;perm*;unique*;",
                "REST STREAM",
                "SIZE",
                "TVFS",
                "UTF8",
            ]
        )
        # Each advertised extension really answers.
        raw.cmd("OPTS UTF8 ON")
        assert raw.code("SIZE /") == 550  # SIZE exists (and refuses a directory)
        assert raw.code("MDTM /") == 213
        assert raw.code("MLST /") == 250
        assert raw.code("REST 0") == 350
        assert raw.code("EPSV") == 229
        assert raw.code(f"EPRT |1|127.0.0.1|{free_port()}|") == 200
        assert raw.code("MFMT 20200101000000 missing") == 550


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_opts(server: ServerThread, home: Path) -> None:
    (home / "f").write_bytes(b"12345")
    with login(server) as raw:
        assert raw.code("OPTS UTF8 ON") == 200
        assert raw.code("OPTS utf8 on") == 200
        assert raw.code("OPTS UTF8 OFF") == 504
        assert raw.code("OPTS UTF8 MAYBE") == 501
        assert raw.code("OPTS NOSUCH x") == 501
        assert raw.code("OPTS") == 501
        assert raw.cmd("OPTS MLST size;type;") == (200, "MLST OPTS type;size;")
        code, text = raw.cmd("MLST f")
        assert code == 250
        assert text.split("\n")[1] == " type=file;size=5; /f"
        # FEAT marks the enabled facts (RFC 3659 7.8).
        assert " MLST type*;size*;modify;perm;unique;" in raw.cmd("FEAT")[1].split("\n")
        assert raw.cmd("OPTS MLST") == (200, "MLST OPTS ")
        assert raw.cmd("MLST f")[1].split("\n")[1] == "  /f"


def test_stat(server: ServerThread, home: Path) -> None:
    (home / "sub").mkdir()
    (home / "sub" / "file one").write_bytes(b"x" * 10)
    with login(server) as raw:
        code, text = raw.cmd("STAT")
        assert code == 211
        assert "Logged in as alice" in text and "Transfer in progress: no" in text
        code, text = raw.cmd("STAT sub")
        assert code == 213
        lines = text.split("\n")
        assert lines[0] == "Status of /sub:" and lines[-1] == "End of status"
        assert len(lines) == 3
        assert re.match(r"^-rw\S+ +\d+ +\S+ +\S+ +10 [A-Z][a-z]{2} [ \d]\d [\d:]{5} file one$", lines[1]), (
            lines
        )
        code, text = raw.cmd("STAT -la sub/file one")
        assert code == 213 and text.split("\n")[1].endswith("file one")
        assert raw.code("STAT missing") == 550


def test_pwd_cwd_cdup(server: ServerThread, home: Path) -> None:
    (home / "a" / "b").mkdir(parents=True)
    (home / "file").write_bytes(b"")
    with login(server) as raw:
        assert raw.cmd("PWD") == (257, '"/" is the current directory')
        assert raw.code("CWD a/b") == 250
        assert raw.cmd("XPWD") == (257, '"/a/b" is the current directory')
        assert raw.code("CDUP") == 250
        assert raw.cmd("PWD")[1].startswith('"/a"')
        assert raw.code("XCUP") == 250
        assert raw.code("XCUP") == 250  # at the root: stays there
        assert raw.cmd("PWD")[1].startswith('"/"')
        assert raw.code("XCWD /a") == 250
        assert raw.code("CWD missing") == 550
        assert raw.code("CWD /file") == 550
        assert raw.cmd("PWD")[1].startswith('"/a"')
        assert raw.code("CWD") == 501


def test_mkd_rmd(server: ServerThread, home: Path) -> None:
    with login(server) as raw:
        assert raw.cmd("MKD new") == (257, '"/new" created')
        assert (home / "new").is_dir()
        assert raw.code("MKD new") == 550
        assert raw.cmd('XMKD say "hi"') == (257, '"/say ""hi""" created')  # RFC 959 appendix II
        assert (home / 'say "hi"').is_dir()
        assert raw.code("MKD no/such/parent") == 550
        assert raw.code("MKD /") == 550
        (home / "new" / "f").write_bytes(b"")
        assert raw.code("RMD new") == 550  # not empty
        (home / "new" / "f").unlink()
        assert raw.code("CWD new") == 250
        assert raw.code("RMD /new") == 550  # the current directory
        assert raw.code("CDUP") == 250
        assert raw.code("RMD new") == 250
        assert not (home / "new").exists()
        assert raw.code('XRMD say "hi"') == 250
        assert raw.code("RMD new") == 550  # gone
        assert raw.code("RMD /") == 550
        (home / "file").write_bytes(b"")
        assert raw.code("RMD file") == 550
        assert (home / "file").exists()


def test_dele(server: ServerThread, home: Path) -> None:
    (home / "f").write_bytes(b"data")
    (home / "d").mkdir()
    with login(server) as raw:
        assert raw.code("DELE f") == 250
        assert not (home / "f").exists()
        assert raw.code("DELE f") == 550
        assert raw.code("DELE d") == 550
        assert (home / "d").is_dir()


def test_rnfr_rnto(server: ServerThread, home: Path) -> None:
    (home / "a").write_bytes(b"A")
    (home / "dir" / "sub").mkdir(parents=True)
    with login(server) as raw:
        assert raw.code("RNTO b") == 503  # no RNFR
        assert raw.code("RNFR a") == 350
        assert raw.code("RNTO b") == 250
        assert (home / "b").read_bytes() == b"A" and not (home / "a").exists()
        assert raw.code("RNFR missing") == 550
        assert raw.code("RNTO x") == 503
        assert raw.code("RNFR b") == 350
        assert raw.code("NOOP") == 200
        assert raw.code("RNTO c") == 503  # RNTO must come right after RNFR (RFC 959 5.4)
        assert raw.code("RNFR dir") == 350
        assert raw.code("RNTO dir/sub/inside") == 553
        assert raw.code("RNFR dir") == 350
        assert raw.code("RNTO /") == 553
        assert raw.code("RNFR /") == 550
        assert raw.code("RNFR dir") == 350
        assert raw.code("RNTO moved") == 250
        assert (home / "moved" / "sub").is_dir()
        assert raw.code("RNFR b") == 350
        assert raw.code("RNTO moved") == 550  # a file onto a directory
        assert raw.code("RNFR b") == 350
        assert raw.code("RNTO no/such/dir/b") == 550
        assert (home / "b").exists()


def test_size_mdtm_mfmt(server: ServerThread, home: Path) -> None:
    f = home / "f"
    f.write_bytes(b"x" * 1234)
    os.utime(f, (1_600_000_000, 1_600_000_000))
    with login(server) as raw:
        assert raw.cmd("SIZE f") == (213, "1234")
        assert raw.code("SIZE /") == 550
        assert raw.code("SIZE missing") == 550
        assert raw.cmd("MDTM f") == (213, time.strftime("%Y%m%d%H%M%S", time.gmtime(1_600_000_000)))
        assert raw.code("MDTM missing") == 550
        assert raw.cmd("MFMT 20210304050607 f") == (213, "Modify=20210304050607; f")
        assert f.stat().st_mtime == 1614834367
        assert raw.cmd("MDTM f") == (213, "20210304050607")
        assert raw.code("MFMT 2021 f") == 501
        assert raw.code("MFMT 20210304050607") == 501
        assert raw.code("MFMT 20210304050607 missing") == 550


def test_type_mode_stru_allo(server: ServerThread) -> None:
    with login(server) as raw:
        for arg in ("A", "a", "I", "L 8", "A N"):
            assert raw.code(f"TYPE {arg}") == 200, arg
        assert raw.code("TYPE E") == 504
        assert raw.code("TYPE L 7") == 504
        assert raw.code("TYPE Q") == 501
        assert raw.code("TYPE") == 501
        assert raw.code("MODE S") == 200
        assert raw.code("MODE B") == 504
        assert raw.code("MODE C") == 504
        assert raw.code("STRU F") == 200
        assert raw.code("STRU R") == 504
        assert raw.code("STRU P") == 504
        assert raw.code("ALLO") == 202
        assert raw.code("ALLO 1000") == 202


def test_pasv_epsv(server: ServerThread) -> None:
    with login(server) as raw:
        code, text = raw.cmd("PASV")
        assert code == 227
        m = re.search(r"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", text)
        assert m and ".".join(m.groups()[:4]) == "127.0.0.1"
        port = int(m.group(5)) * 256 + int(m.group(6))
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert raw.code("EPSV") == 229
        assert raw.code("EPSV 1") == 229
        assert raw.code("EPSV 2") == 522  # IPv4 control connection
        assert raw.code("EPSV 3") == 522
        assert raw.cmd("EPSV ALL")[0] == 200
        assert raw.code("PASV") == 503
        assert raw.code("PORT 127,0,0,1,200,10") == 503
        assert raw.code("EPRT |1|127.0.0.1|51210|") == 503
        assert raw.code("EPSV") == 229  # still allowed


def _epsv_port(raw: Raw) -> int:
    code, text = raw.cmd("EPSV")
    assert code == 229, text
    m = re.search(r"\(\|\|\|(\d+)\|\)", text)
    assert m, text
    return int(m.group(1))


def _dynamic_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except OSError:
        pytest.skip("Linux only")
    return low, high


def test_passive_ports_default_to_random_ports_of_the_dynamic_range(server: ServerThread) -> None:
    low, high = _dynamic_range()
    with login(server) as raw:
        ports = [_epsv_port(raw) for _ in range(6)]
    assert all(low <= p <= high for p in ports), ports
    assert len(set(ports)) > 1, ports  # chosen at random, so not guessable


def only_port(port: int, *, reserved: bool = False) -> object:
    """A dynamic range of one port, as the OS settings would give it."""
    from fsftpd.transfer.data import DynamicPorts

    return DynamicPorts(lambda: (range(port, port + 1), ((port, port),) if reserved else ()))


def test_reserved_ports_parsed() -> None:
    from fsftpd.transfer.data import parse_reserved_ports

    assert parse_reserved_ports("\n") == ()
    assert parse_reserved_ports("8080,30000-30010\n") == ((8080, 8080), (30000, 30010))
    assert parse_reserved_ports("x, 5-6") == ((5, 6),)


def test_passive_port_in_time_wait_is_reused_and_a_busy_port_skipped(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsftpd.transfer import data as data_module

    (home / "f").write_bytes(b"payload")
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with running_server([user]) as srv, login(srv) as raw:

        def download(port: int) -> None:
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            assert raw.cmd("RETR f")[0] == 150
            assert recv_all(conn) == b"payload"
            assert raw.read()[0] == 226
            conn.close()

        port = _epsv_port(raw)
        download(port)
        # A reserved port (ip_local_reserved_ports) is never offered, even when free.
        monkeypatch.setattr(data_module, "_DYNAMIC", only_port(port, reserved=True))
        other = _epsv_port(raw)
        assert other != port
        download(other)
        # The server closed the download's connection first: its end is in TIME_WAIT,
        # which keeps the port from a plain bind (and from the OS's own choice of a port).
        probe = socket.socket()
        with pytest.raises(OSError):
            probe.bind(("127.0.0.1", port))
        probe.close()
        # Named explicitly, the port is taken over at once.
        monkeypatch.setattr(data_module, "_DYNAMIC", only_port(port))
        assert _epsv_port(raw) == port
        download(port)
        # A port another program listens on is never offered: the OS picks one instead.
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = busy.getsockname()[1]
            monkeypatch.setattr(data_module, "_DYNAMIC", only_port(taken))
            other = _epsv_port(raw)
            assert other != taken
            download(other)


def test_port_eprt(server: ServerThread) -> None:
    with login(server) as raw:
        assert raw.code("PORT 127,0,0,1,200,10") == 200
        assert raw.code("PORT 127,0,0,1,0,21") == 501  # privileged port (RFC 2577)
        assert raw.code("PORT 10,1,2,3,200,10") == 501  # not the client's address (no FTP bounce)
        assert raw.code("PORT 1,2,3") == 501
        assert raw.code("PORT a,b,c,d,e,f") == 501
        assert raw.code("PORT 127,0,0,1,300,1") == 501
        assert raw.code("EPRT |1|127.0.0.1|51210|") == 200
        assert raw.code("EPRT |2|::1|51210|") == 501  # family and address disagree with the peer
        assert raw.code("EPRT |3|127.0.0.1|51210|") == 522
        assert raw.code("EPRT |1|127.0.0.1|0|") == 501
        assert raw.code("EPRT |1|127.0.0.1|99999|") == 501
        assert raw.code("EPRT |1|not-an-ip|51210|") == 501
        assert raw.code("EPRT garbage") == 501
        assert raw.code("EPRT |1|10.9.8.7|51210|") == 501


def test_transfer_without_data_channel_is_425(server: ServerThread, home: Path) -> None:
    (home / "f").write_bytes(b"x")
    with login(server) as raw:
        for cmd in ("RETR f", "STOR g", "APPE g", "STOU", "LIST", "NLST", "MLSD"):
            assert raw.code(cmd) == 425, cmd
        assert not (home / "g").exists()
        assert [p.name for p in home.iterdir()] == ["f"]


def test_data_connection_never_made_is_425(home: Path) -> None:
    (home / "f").write_bytes(b"x")
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with running_server([user], wait_future_timeout=0.3) as srv, login(srv) as raw:
        raw.cmd("EPSV")  # ... but never connect
        assert raw.cmd("RETR f")[0] == 150
        assert raw.read()[0] == 425
        raw.cmd("EPSV")
        assert raw.cmd("STOR g")[0] == 150
        assert raw.read()[0] == 425
        assert [p.name for p in home.iterdir()] == ["f"]  # no temp file left behind
        assert raw.code("NOOP") == 200


def test_listings(server: ServerThread, home: Path) -> None:
    (home / "d").mkdir()
    (home / "f 1").write_bytes(b"abc")
    with login(server) as raw:
        data = raw.epsv()
        assert raw.cmd("LIST")[0] == 150
        listing = recv_all(data).decode()
        assert raw.read() == (226, "Listing complete")
        lines = sorted(listing.splitlines())
        assert len(lines) == 2 and lines[0].startswith("-rw") and lines[0].endswith(" f 1")
        assert lines[1].startswith("drwx") and lines[1].endswith(" d")
        assert listing.endswith("\r\n")

        data = raw.epsv()
        assert raw.cmd("NLST")[0] == 150
        assert sorted(recv_all(data).decode().split("\r\n")) == ["", "d", "f 1"]
        assert raw.read()[0] == 226

        data = raw.epsv()
        assert raw.cmd("MLSD /")[0] == 150
        facts = {
            line.split(" ", 1)[1]: line.split(" ", 1)[0] for line in recv_all(data).decode().splitlines()
        }
        assert raw.read()[0] == 226
        assert facts["f 1"].startswith("type=file;size=3;modify=") and "perm=rwadf;" in facts["f 1"]
        assert facts["d"].startswith("type=dir;") and "perm=elcmpfd;" in facts["d"]

        data = raw.epsv()
        assert raw.cmd("LIST -la f 1")[0] == 150  # a file lists as itself
        assert recv_all(data).decode().rstrip().endswith(" f 1")
        assert raw.read()[0] == 226

        code, text = raw.cmd("MLST f 1")
        assert code == 250 and text.split("\n")[1].startswith(" type=file;size=3;")
        assert text.split("\n")[1].endswith(" /f 1")
        assert raw.code("MLST missing") == 550

        raw.epsv().close()
        assert raw.code("LIST missing") == 550
        assert raw.code("MLSD f 1") == 501
        assert raw.code("NLST missing") == 550


def test_retr_stor_appe_stou_rest(server: ServerThread, home: Path) -> None:
    ftp = server.ftp("alice", "secret")
    assert ftp.storbinary("STOR f", io.BytesIO(b"hello")).startswith("226")
    assert ftp.storbinary("APPE f", io.BytesIO(b" world")).startswith("226")
    assert (home / "f").read_bytes() == b"hello world"
    out = io.BytesIO()
    assert ftp.retrbinary("RETR f", out.write).startswith("226")
    assert out.getvalue() == b"hello world"
    out = io.BytesIO()
    ftp.retrbinary("RETR f", out.write, rest=6)
    assert out.getvalue() == b"world"
    assert ftp.sendcmd("REST 5") == "350 Restarting at 5. Send STOR, APPE or RETR"
    with pytest.raises(Exception, match=r"^501"):
        ftp.sendcmd("REST -1")
    ftp.sendcmd("REST 0")
    with pytest.raises(Exception, match=r"^554"):
        ftp.retrbinary("RETR f", out.write, rest=100)
    with pytest.raises(Exception, match=r"^550"):
        ftp.retrbinary("RETR missing", out.write)
    (home / "dir").mkdir()
    with pytest.raises(Exception, match=r"^550"):
        ftp.retrbinary("RETR dir", out.write)
    with pytest.raises(Exception, match=r"^550"):
        ftp.storbinary("STOR dir", io.BytesIO(b"x"))
    assert (home / "dir").is_dir()
    # STOU: a unique name, announced in the 150 and 226 replies (RFC 1123 4.1.2.9).
    conn, _ = ftp.ntransfercmd("STOU")
    conn.sendall(b"unique")
    conn.close()
    final = ftp.voidresp()
    name = re.search(r"unique file name: (\S+)\)", final)
    assert name, final
    assert (home / name.group(1)).read_bytes() == b"unique"
    conn, _ = ftp.ntransfercmd("STOU f")
    conn.close()
    second = re.search(r"unique file name: (\S+)\)", ftp.voidresp())
    assert second and second.group(1).startswith("f.") and second.group(1) != "f"
    assert (home / "f").read_bytes() == b"hello world"  # STOU never overwrites
    # The argument only suggests a stem: no directory part, never a hidden name.
    for arg, stem in (("/", "ftp."), ("../../x", "x."), ("dir/y", "y.")):
        conn, _ = ftp.ntransfercmd(f"STOU {arg}")
        conn.close()
        made = re.search(r"unique file name: (\S+)\)", ftp.voidresp())
        assert made and made.group(1).startswith(stem), (arg, made)
        assert (home / made.group(1)).is_file()
    ftp.quit()


def test_abor_without_transfer(server: ServerThread) -> None:
    with login(server) as raw:
        assert raw.code("ABOR") == 225
        raw.epsv().close()
        assert raw.code("ABOR") == 225  # closes the prepared data channel
        assert raw.code("LIST") == 425


@pytest.mark.parametrize("verb", ["RETR", "STOR"])
def test_rest_sequencing(server: ServerThread, home: Path, verb: str) -> None:
    (home / "f").write_bytes(b"0123456789")
    with login(server) as raw:
        raw.epsv().close()
        assert raw.code("REST 4") == 350
        assert raw.code("STOU") == 503  # REST is not for STOU
        # The offset was consumed by the refused command.
        data = raw.epsv()
        raw.send(f"{verb} f")
        assert raw.read()[0] == 150
        if verb == "RETR":
            assert recv_all(data) == b"0123456789"
        else:
            data.sendall(b"new")
            data.close()
        assert raw.read()[0] == 226
        expected = b"0123456789" if verb == "RETR" else b"new"
        assert (home / "f").read_bytes() == expected


def _free_port_pair() -> int:
    for _ in range(50):
        base = free_port()
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", base))
                b.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
    pytest.skip("no two adjacent free ports")


def test_passive_ports_and_masquerade_address(home: Path) -> None:
    (home / "f").write_bytes(b"payload")
    base = _free_port_pair()
    user = fsftpd.User("alice", "secret", base_path=str(home))
    with running_server([user], passive_ports=range(base, base + 2), masquerade_address="127.0.0.1") as srv:
        sessions = [login(srv) for _ in range(3)]
        try:
            ports = []
            for raw in sessions[:2]:
                code, text = raw.cmd("PASV")
                assert code == 227
                nums = [int(n) for n in re.findall(r"\d+", text.split("(")[1])]
                assert nums[:4] == [127, 0, 0, 1]  # the masquerade address
                ports.append(nums[4] * 256 + nums[5])
            assert sorted(ports) == [base, base + 1]
            assert sessions[2].code("EPSV") == 425  # every passive port is taken
            # The listeners really work, and a port is free again once used.
            data = socket.create_connection(("127.0.0.1", ports[0]), timeout=5)
            assert sessions[0].cmd("RETR f")[0] == 150
            assert recv_all(data) == b"payload"
            assert sessions[0].read()[0] == 226
            code, text = sessions[2].cmd("EPSV")
            assert code == 229 and f"|||{ports[0]}|" in text
        finally:
            for raw in sessions:
                raw.close()
