"""The appliance's configuration: environment variables (prefix ``FSFTPD_``), read with
pydantic-settings.

Invariants:
- every :class:`fsftpd.ServerConfig` field has its variable ``FSFTPD_<FIELD>`` without any
  edit here: the fields are derived from the dataclass (:func:`_server_config_fields`);
- a variable is read, in this order, from: a command-line flag, the environment, the file
  named by ``<NAME>_FILE`` (secrets only, see :data:`SECRETS`), a file of the secrets
  directory (``/run/secrets`` when it exists, or ``FSFTPD_SECRETS_DIR``);
- :func:`load` never raises for a bad value: it returns one line per problem, each naming
  the variable (or flag) and saying what is wrong, and never showing a secret's value.
"""

from __future__ import annotations

import contextvars
import dataclasses
import ipaddress
import json
import os
import re
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

import fsftpd

from .values import (
    check_address,
    check_home_scheme,
    parse_port_range,
    replica_number,
    replica_ports,
    split_hosts,
)

PREFIX = "FSFTPD_"
#: ServerConfig fields with a variable of their own below (not derived)
SPECIAL = frozenset({"passive_ports", "masquerade_address", "storage_options", "tls_cert", "tls_key",
                     "ban_safelist"})
#: variables whose value is secret: also read from <NAME>_FILE, never printed or logged
SECRETS = ("FSFTPD_PASSWORD", "FTP_PASS", "FSFTPD_USERS", "FSFTPD_STORAGE_OPTIONS")
#: botocore's variables for s3:// homes that may also come from <NAME>_FILE
AWS_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
#: what a masked secret looks like
MASK = "********"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: What each ServerConfig option means (for --help and docs); an option missing here is
#: described by its name: adding one to ServerConfig needs no edit in this file.
DESCRIPTIONS: dict[str, str] = {
    "maximum_connections": "sessions at once; over it a new client gets 421",
    "maximum_connections_per_ip": "sessions at once from one address",
    "socket_timeout": "bound on every read/write on control and data connections (s)",
    "path_timeout": "bound on every storage operation, then 451 (s)",
    "idle_timeout": "silence allowed between commands, then 421 (s)",
    "wait_future_timeout": "wait for the client's data connection, then 425 (s)",
    "read_speed_limit": "upload rate of the whole server (bytes/s)",
    "write_speed_limit": "download rate of the whole server (bytes/s)",
    "read_speed_limit_per_connection": "upload rate of each session (bytes/s)",
    "write_speed_limit_per_connection": "download rate of each session (bytes/s)",
    "banner": "text of the 220 greeting",
    "shutdown_timeout": "how long a drain lets running transfers finish (s)",
    "listing_sort_limit": "listings of up to this many entries come sorted by name, bigger ones in "
                          "directory order; 0: never sort",
    "max_login_attempts": "failed logins before the connection is closed",
    "failed_login_delay": "pause before answering a failed login (s)",
    "tls_min_version": "lowest TLS version accepted: 1.2 or 1.3",
    "tls_required": "TLS every session must use: none, control, data or both",
    "implicit_tls_port": "port for implicit FTPS (TLS from the first byte); none: off",
    "tls_require_session_reuse": "refuse (522) a data connection that does not resume the control "
                                 "connection's TLS session",
    "tls_require_close_notify": "a protected upload counts only if ended by TLS close_notify",
    "tls_handshake_timeout": "bound on a TLS handshake (s)",
    "passive_timeout": "an unused passive listener is closed after this (s)",
    "passive_peer_check": "data connections only from the client's address (off: clients behind proxies)",
    "active_mode": "allow PORT/EPRT (false: 502, passive only)",
    "ban_threshold": "failed logins from one address within FSFTPD_BAN_WINDOW that ban it; none: no bans",
    "ban_window": "the window in which failed logins are counted (s)",
    "ban_time": "length of a first ban, doubled for each further one (s)",
    "ban_time_max": "the longest ban (s)",
}

#: The appliance faces the internet: its defaults bound every wait and every count, as
#: vsftpd's do (docs/security.md), where the library's defaults are None (no limit).
#: ``auto``: derived from the descriptor limit at start (see :func:`server_options`).
APPLIANCE_DEFAULTS: dict[str, Any] = {
    "idle_timeout": 300.0,
    "socket_timeout": 300.0,
    "wait_future_timeout": 60.0,
    "passive_timeout": 60.0,
    "maximum_connections": "auto",
    "maximum_connections_per_ip": 50,
    "ban_threshold": 10,
}
#: descriptors one session may hold at once (control, passive listener, data, file) and
#: those kept for the process itself (listeners, logs, storage clients)
FDS_PER_SESSION = 4
FDS_RESERVED = 64
#: the ``auto`` connection cap per process never goes above this (vsftpd's max_clients)
AUTO_CONNECTIONS_MAX = 2000

# The environment a load reads (a copy of os.environ with the _FILE secrets filled in).
_ENVIRON: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("fsftpd_environ")


def _count_or_auto(value: Any) -> Any:
    """A count >= 0, ``none`` (None) or ``auto``; one message for anything else."""
    if value is None or value == "auto":
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        number = int(text)
    except ValueError:
        raise ValueError("must be an integer >= 0, none or auto") from None
    if number < 0:
        raise ValueError("must be an integer >= 0, none or auto")
    return number


def _server_config_fields() -> dict[str, Any]:
    """One settings field per ServerConfig field (but :data:`SPECIAL`), same type and default.
    Numbers must be >= 0 (the library checks the finer rules, e.g. timeouts > 0)."""
    hints = typing.get_type_hints(fsftpd.ServerConfig)
    made: dict[str, Any] = {}
    for f in dataclasses.fields(fsftpd.ServerConfig):
        if f.name in SPECIAL:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        default = APPLIANCE_DEFAULTS.get(f.name, default)
        kind = hints[f.name]
        numeric = any(t in (int, float) for t in typing.get_args(kind) or (kind,))
        if default == "auto":  # a count >= 0, none, or auto
            kind = Annotated[int | str | None, BeforeValidator(_count_or_auto)]
            numeric = False
        info = Field(default=default, description=DESCRIPTIONS.get(f.name, f"ServerConfig.{f.name}"),
                     ge=0 if numeric else None)
        made[f.name] = (kind, info)
    return made


class _Environ(EnvSettingsSource):
    """The environment of :func:`load` (not necessarily ``os.environ``)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get(os.environ)
        return parse_env_vars(environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _alias(*names: str) -> Any:
    return AliasChoices(*names)


if TYPE_CHECKING:
    _Base = BaseSettings
else:
    _Base = create_model("_ServerConfigSettings", __base__=BaseSettings, **_server_config_fields())


class Settings(_Base):
    """Every setting of the appliance. Field ``x`` is variable ``FSFTPD_X`` (plus aliases)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, extra="ignore", env_ignore_empty=True, env_parse_none_str="none",
        validate_by_name=True, validate_by_alias=True, case_sensitive=False,
    )

    # -- listener and process
    host: str | None = Field(None, description="listen address(es), comma-separated; none: every "
                             "IPv4 and IPv6 address")
    port: int = Field(2121, ge=0, le=65535, description="control port (0: any free port)")
    passive_ports: Annotated[str | None, NoDecode] = Field(
        "30000-30009", description="passive port range LOW-HIGH or one port; 'any': a free port")
    pasv_min_port: int | None = Field(None, validation_alias=_alias("PASV_MIN_PORT"), ge=1, le=65535,
                                      description="alias: low end of FSFTPD_PASSIVE_PORTS")
    pasv_max_port: int | None = Field(None, validation_alias=_alias("PASV_MAX_PORT"), ge=1, le=65535,
                                      description="alias: high end of FSFTPD_PASSIVE_PORTS")
    passive_address: str | None = Field(
        None, validation_alias=_alias("FSFTPD_PASSIVE_ADDRESS", "FSFTPD_MASQUERADE_ADDRESS",
                                      "PASV_ADDRESS", "PUBLICHOST"),
        description="IP or DNS name announced in PASV replies ({index}: the replica index)")
    replicas: int = Field(1, ge=1, description="replicas sharing one passive range")
    replica_index: str = Field("0", description="this replica's index, or a pod name like fsftpd-2")
    workers: int = Field(1, ge=1, description="worker processes (Linux)")
    metrics_port: int = Field(9100, ge=0, le=65535, description="metrics sidecar port; 0: off")
    metrics_host: str | None = Field(None, description="metrics sidecar address; none: all")
    metrics_per_user: bool = Field(True, description="a user label on per-user metrics")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    log_format: str = Field("text", description="text or json")
    ban_safelist: Annotated[str | None, NoDecode] = Field(
        None, description="addresses and CIDR networks never banned, comma-separated")
    # -- storage
    home: str = Field("./ftp-data", description="default home: a path, file://, memory://, s3://bucket/prefix")
    storage_options: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict, description="JSON object of options for every storage backend")
    # -- users
    users: Annotated[str | None, NoDecode] = Field(None, description="users, a JSON list (see below)")
    users_file: str | None = Field(None, description="a JSON file of users (re-read on SIGHUP)")
    user: str | None = Field(None, validation_alias=_alias("FSFTPD_USER", "FTP_USER"),
                             description="one user's login (home FSFTPD_HOME)")
    password: SecretStr | None = Field(None, validation_alias=_alias("FSFTPD_PASSWORD", "FTP_PASS"),
                                       description="that user's password, plain or hashed")
    anonymous: bool = Field(False, description="add the anonymous user (home FSFTPD_HOME)")
    anonymous_write: bool = Field(False, description="let the anonymous user write")
    read_only: bool = Field(False, description="FSFTPD_USER and the generated user cannot write")
    # -- TLS (FTPS, RFC 4217): both files enable AUTH TLS; re-read on SIGHUP
    tls_cert: str | None = Field(None, validation_alias=_alias("FSFTPD_TLS_CERT", "TLS_CERT"),
                                 description="PEM certificate chain file (enables FTPS; re-read on SIGHUP)")
    tls_key: str | None = Field(None, validation_alias=_alias("FSFTPD_TLS_KEY", "TLS_KEY"),
                                description="PEM private key file (re-read on SIGHUP)")

    ALIASES: ClassVar[dict[str, tuple[str, ...]]] = {}  # filled below: field -> alias names

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environ(settings_cls), file_secret_settings

    # -- value checks (one message each; the variable is named by the caller) ----------
    @field_validator("passive_ports", mode="before")
    @classmethod
    def _ports_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            parse_port_range(value)  # raises ValueError with the reason
        return value

    @field_validator("ban_safelist", mode="before")
    @classmethod
    def _safelist(cls, value: Any) -> Any:
        if isinstance(value, str):
            for item in split_list(value):
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is not an address or a CIDR network") from None
        return value

    @field_validator("storage_options", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
            if not isinstance(value, dict):
                raise ValueError("must be a JSON object")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        text = str(value).strip().upper()
        if text not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return text

    @field_validator("log_format", mode="before")
    @classmethod
    def _format(cls, value: Any) -> Any:
        text = str(value).strip().lower()
        if text not in ("text", "json"):
            raise ValueError("must be text or json")
        return text

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, value: Any) -> Any:
        if isinstance(value, str):
            for item in split_hosts(value):
                check_address(item)
        return value

    @field_validator("passive_address", mode="before")
    @classmethod
    def _announced(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            text = value.strip().replace("{index}", "0")
            try:
                ipaddress.IPv4Address(text)
            except ValueError:
                name = re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?", text)
                if name is None or re.fullmatch(r"[0-9.]+", text):
                    raise ValueError(f"{value!r} is not an IPv4 address or DNS name") from None
            return value.strip()
        return value

    @field_validator("replica_index", mode="before")
    @classmethod
    def _replica(cls, value: Any) -> Any:
        replica_number(str(value))
        return str(value)

    @field_validator("home")
    @classmethod
    def _home(cls, value: str) -> str:
        check_home_scheme(value)
        return value

    # -- derived values ---------------------------------------------------------------
    def hosts(self) -> list[str] | None:
        return split_hosts(self.host) if self.host else None

    def port_range(self) -> list[int] | None:
        """The passive ports of the whole deployment (before replica and worker slices)."""
        text = self.passive_ports
        if "passive_ports" not in self.model_fields_set and self.pasv_min_port is not None:
            text = f"{self.pasv_min_port}-{self.pasv_max_port or self.pasv_min_port}"
        return parse_port_range(text) if text else None

    def replica(self) -> int:
        return replica_number(self.replica_index)


# Aliases per field (for --help, docs and the messages): every validation alias but the
# field's own FSFTPD_ name.
for _name, _info in Settings.model_fields.items():
    _choices = getattr(_info.validation_alias, "choices", [])
    Settings.ALIASES[_name] = tuple(str(c) for c in _choices if str(c).upper() != PREFIX + _name.upper())


def env_name(field: str) -> str:
    """The variable of a settings field (its FSFTPD_ name; an alias-only field: its alias)."""
    if field in ("pasv_min_port", "pasv_max_port"):
        return field.upper()
    return PREFIX + field.upper()


# -- loading ----------------------------------------------------------------------------
def with_file_secrets(environ: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    """``environ`` with each secret ``NAME`` taken from the file ``NAME_FILE`` names (the
    official images' convention) when ``NAME`` itself is not set."""
    env = dict(environ)
    for name in (*SECRETS, *AWS_SECRETS):
        if name == "FSFTPD_USERS":
            continue  # FSFTPD_USERS_FILE is a variable of its own (re-read on SIGHUP)
        path = env.get(name + "_FILE")
        if not path or env.get(name):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                env[name] = f.read().rstrip("\r\n")
        except OSError as exc:
            problems.append(f"{name}_FILE: cannot read {path}: {exc.strerror or exc}")
        except UnicodeDecodeError:
            problems.append(f"{name}_FILE: {path} is not UTF-8 text")
    return env


def secrets_dir(environ: Mapping[str, str]) -> str | None:
    """Docker/Kubernetes secrets: ``FSFTPD_SECRETS_DIR``, else /run/secrets if it exists."""
    chosen = environ.get("FSFTPD_SECRETS_DIR")
    if chosen:
        return chosen
    return "/run/secrets" if os.path.isdir("/run/secrets") else None


def load(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None,
         flags: Mapping[str, str] | None = None) -> tuple[Settings | None, list[str]]:
    """Read the settings. ``overrides`` (field -> value) come from command-line flags and
    win; ``flags`` (field -> flag) names them in messages. Returns (settings, problems):
    settings is None when any problem was found."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    env = with_file_secrets(environ, problems)
    directory = secrets_dir(env)
    if directory is not None and not os.path.isdir(directory):
        problems.append(f"FSFTPD_SECRETS_DIR: {directory} is not a directory")
        directory = None
    token = _ENVIRON.set(env)
    try:
        settings = Settings(**{"_secrets_dir": directory, **dict(overrides or {})})
    except ValidationError as exc:
        problems += [_describe(error, flags or {}) for error in exc.errors()]
        return None, problems
    finally:
        _ENVIRON.reset(token)
    _check_combinations(settings, problems)
    return (None if problems else settings), problems


def _describe(error: Any, flags: Mapping[str, str]) -> str:
    loc = error.get("loc") or ("?",)
    key = str(loc[0])
    field = key.lower() if key.lower() in Settings.model_fields else None
    if field is None:  # an alias was used
        field = next((f for f, names in Settings.ALIASES.items() if key.upper() in names), None)
    name = flags.get(field or "", "") or (env_name(field) if field and key.lower() == field else key.upper())
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    value = error.get("input")
    secret = name in SECRETS or (field in ("password", "users", "storage_options"))
    shown = "" if secret or isinstance(value, (dict, list)) or value is None else f" (got {value!r})"
    return f"{name}: {message}{shown}"


def _check_combinations(s: Settings, problems: list[str]) -> None:
    """Rules that involve more than one variable, and files that must be readable."""
    if (s.pasv_min_port is None) != (s.pasv_max_port is None) and "passive_ports" not in s.model_fields_set:
        problems.append("PASV_MIN_PORT/PASV_MAX_PORT: set both, or use FSFTPD_PASSIVE_PORTS")
    if s.pasv_min_port is not None and s.pasv_max_port is not None and s.pasv_max_port < s.pasv_min_port:
        problems.append(f"PASV_MAX_PORT: {s.pasv_max_port} is below PASV_MIN_PORT {s.pasv_min_port}")
    else:
        _check_ports(s, problems)
    _check_files(s, problems)


def _check_ports(s: Settings, problems: list[str]) -> None:
    try:
        ports = s.port_range()
    except ValueError as exc:
        problems.append(f"FSFTPD_PASSIVE_PORTS: {exc}")
        return
    replica = s.replica()
    if replica >= s.replicas:
        problems.append(f"FSFTPD_REPLICA_INDEX: {replica} is not below FSFTPD_REPLICAS ({s.replicas})")
    elif s.replicas > 1:
        if ports is None:
            problems.append("FSFTPD_PASSIVE_PORTS: replicas need a passive port range to share")
        elif len(ports) < s.replicas:
            problems.append(f"FSFTPD_PASSIVE_PORTS: {len(ports)} port(s) cannot be shared by "
                            f"FSFTPD_REPLICAS={s.replicas} replicas")
        else:
            ports = replica_ports(ports, s.replicas, replica)
    if ports is not None and len(ports) < s.workers:
        problems.append(f"FSFTPD_PASSIVE_PORTS: {len(ports)} port(s) for FSFTPD_WORKERS={s.workers}: "
                        "each worker needs at least one")


def _check_files(s: Settings, problems: list[str]) -> None:
    if s.users_file is not None and not os.path.isfile(s.users_file):
        problems.append(f"FSFTPD_USERS_FILE: {s.users_file} is not a readable file")
    for field, marker in (("tls_cert", "CERTIFICATE"), ("tls_key", "PRIVATE KEY")):
        path = getattr(s, field)
        if path is None:
            continue
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                text = f.read(1 << 20)
        except OSError as exc:
            problems.append(f"{env_name(field)}: cannot read {path}: {exc.strerror or exc}")
            continue
        if "-----BEGIN" not in text or marker not in text:
            problems.append(f"{env_name(field)}: {path} holds no PEM {marker.lower()}")
    if (s.tls_cert is None) != (s.tls_key is None):
        problems.append("FSFTPD_TLS_CERT/FSFTPD_TLS_KEY: set both or neither")
    elif s.tls_cert is None:
        if getattr(s, "tls_required", None) not in (None, "none"):
            problems.append("FSFTPD_TLS_REQUIRED: needs FSFTPD_TLS_CERT and FSFTPD_TLS_KEY")
        if getattr(s, "implicit_tls_port", None) is not None:
            problems.append("FSFTPD_IMPLICIT_TLS_PORT: needs FSFTPD_TLS_CERT and FSFTPD_TLS_KEY")


def server_options(s: Settings) -> dict[str, Any]:
    """The keyword options of :class:`fsftpd.Server` (and run_workers) for these settings."""
    options: dict[str, Any] = {}
    for f in dataclasses.fields(fsftpd.ServerConfig):
        if f.name not in SPECIAL:
            options[f.name] = getattr(s, f.name)
    if options["maximum_connections"] == "auto":
        options["maximum_connections"] = auto_connections(s.workers)
    ports = s.port_range()
    if ports is not None and s.replicas > 1:
        ports = replica_ports(ports, s.replicas, s.replica())
    options["passive_ports"] = ports
    address = s.passive_address
    if address:
        address = address.replace("{index}", str(s.replica()))
    options["masquerade_address"] = address or None
    options["storage_options"] = dict(s.storage_options)
    options["tls_cert"] = s.tls_cert
    options["tls_key"] = s.tls_key
    options["ban_safelist"] = split_list(s.ban_safelist or "")
    return options


def split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def auto_connections(workers: int, nofile: int | None = None) -> int:
    """The ``auto`` connection cap: what the descriptor limit (``nofile``, default: this
    process's soft RLIMIT_NOFILE) lets every worker serve before it runs out, so a flood
    gets 421 instead of "Too many open files"; at most :data:`AUTO_CONNECTIONS_MAX` per worker."""
    if nofile is None:
        import resource

        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if nofile == resource.RLIM_INFINITY:
            nofile = 1 << 20
    per_worker = max(1, (nofile - FDS_RESERVED) // FDS_PER_SESSION)
    return workers * min(AUTO_CONNECTIONS_MAX, per_worker)
