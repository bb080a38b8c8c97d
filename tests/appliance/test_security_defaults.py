"""The appliance's defaults are safe (bounded waits and counts) while the library's stay None."""

from __future__ import annotations

import dataclasses

import fsftpd
from fsftpd.appliance.settings import auto_connections, load, server_options


def test_the_library_keeps_no_limit_defaults() -> None:
    config = fsftpd.ServerConfig()
    for name in ("idle_timeout", "socket_timeout", "passive_timeout", "maximum_connections",
                 "maximum_connections_per_ip"):
        assert getattr(config, name) is None, name
    assert config.passive_peer_check and config.active_mode


def test_the_appliance_defaults_bound_every_wait_and_count() -> None:
    settings, problems = load({})
    assert settings is not None, problems
    options = server_options(settings)
    assert options["idle_timeout"] == 300
    assert options["socket_timeout"] == 300
    assert options["wait_future_timeout"] == 60
    assert options["passive_timeout"] == 60
    assert options["maximum_connections_per_ip"] == 50
    assert options["maximum_connections"] == auto_connections(1) > 0
    assert options["passive_peer_check"] is True and options["active_mode"] is True
    fsftpd.Server([], **options)  # the library accepts them all
    names = {f.name for f in dataclasses.fields(fsftpd.ServerConfig)}
    assert set(options) <= names


def test_auto_connections_follow_the_descriptor_limit() -> None:
    assert auto_connections(1, nofile=256) == (256 - 64) // 4
    assert auto_connections(3, nofile=256) == 3 * ((256 - 64) // 4)
    assert auto_connections(1, nofile=1 << 20) == 2000
    assert auto_connections(1, nofile=10) == 1


def test_none_switches_a_cap_off_and_numbers_are_kept() -> None:
    settings, _ = load({"FSFTPD_MAXIMUM_CONNECTIONS": "none", "FSFTPD_IDLE_TIMEOUT": "none"})
    assert settings is not None
    options = server_options(settings)
    assert options["maximum_connections"] is None and options["idle_timeout"] is None
    settings, _ = load({"FSFTPD_MAXIMUM_CONNECTIONS": "7", "FSFTPD_ACTIVE_MODE": "false"})
    assert settings is not None
    options = server_options(settings)
    assert options["maximum_connections"] == 7 and options["active_mode"] is False
    assert load({"FSFTPD_MAXIMUM_CONNECTIONS": "many"})[0] is None
