"""Connection strings parsed by agts itself, so that no part of a password ever reaches a message.

libpq's own parser quotes what it cannot read: ``postgresql://u:sec%zzret@h/db`` gives
``invalid percent-encoded token: "sec%zzret"``, ``password=hunter2 w0rd`` gives ``missing "="
after "w0rd"``, and ``postgresql://u:p@ss@host/db`` parses as host ``ss@host``, which a later
"cannot connect to u@ss@host" shows. :func:`parse_dsn` reads both forms libpq accepts (a
``postgresql://`` / ``postgres://`` URI, or ``key=value`` pairs) by libpq's rules and refuses
anything else with a :class:`~agts.errors.ConfigError` that names only *where* the problem is
(the part of the URI, the keyword before it), never a value; the keywords it returns are then
handed to libpq as a dict, so libpq never parses the raw text.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from agts.errors import ConfigError

__all__ = ["parse_dsn"]

_SCHEMES = ("postgresql://", "postgres://")
_KEYWORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _error(where: str) -> ConfigError:
    return ConfigError(f"database.dsn is not a valid connection string: {where} (the value is "
                       "not shown: it may hold a password)")


def _keywords() -> frozenset[str]:
    from psycopg import pq

    return frozenset(d.keyword.decode() for d in pq.Conninfo.get_defaults())


def _decode(text: str, part: str) -> str:
    if _BAD_PERCENT.search(text):
        raise _error(f"a '%' in the {part} is not followed by two hex digits (write a literal "
                     "'%' as %25)")
    try:
        return unquote_to_bytes(text).decode()
    except UnicodeDecodeError:
        raise _error(f"the {part} is not UTF-8 once percent-decoded") from None


def _parse_uri(dsn: str) -> dict[str, str]:
    rest = dsn.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    params: dict[str, str] = {}
    if authority.count("@") > 1:
        raise _error("the user name or password holds an '@' (percent-encode it as %40)")
    userinfo, at, hosts = authority.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            params["user"] = _decode(user, "user name")
        if colon:
            params["password"] = _decode(password, "password")
    if hosts:
        names, ports = [], []
        for item in hosts.split(","):
            if item.startswith("["):  # [IPv6]:port
                host, bracket, tail = item[1:].partition("]")
                if not bracket or (tail and not tail.startswith(":")):
                    raise _error("a bracketed IPv6 host is not closed")
                port = tail[1:]
            else:
                host, _, port = item.partition(":")
            if port and not port.isdigit():
                raise _error("a port is not a number")
            names.append(_decode(host, "host"))
            ports.append(port)
        if any(names):
            params["host"] = ",".join(names)
        if any(ports):
            params["port"] = ",".join(ports)
    if path:
        params["dbname"] = _decode(path, "database name")
    known = _keywords()
    for pair in filter(None, query.split("&")):
        key, eq, value = pair.partition("=")
        key = _decode(key, "query parameter name")
        if not eq:
            raise _error("a query parameter has no '='")
        if key == "ssl" and value == "true":
            key, value = "sslmode", "require"
        if key not in known:
            raise _error("a query parameter is not a libpq connection option (see "
                         "https://www.postgresql.org/docs/current/libpq-connect.html)")
        params[key] = _decode(value, f"value of query parameter {key!r}")
    return params


def _parse_pairs(dsn: str) -> dict[str, str]:
    params: dict[str, str] = {}
    known = _keywords()
    i, n = 0, len(dsn)
    previous = "the start"
    while True:
        while i < n and dsn[i].isspace():
            i += 1
        if i == n:
            return params
        match = _KEYWORD.match(dsn, i)
        shown = f"after the value of {previous!r}" if previous != "the start" else "at the start"
        if match is None:
            raise _error(f"expected a keyword {shown}")
        key = match.group()
        i = match.end()
        while i < n and dsn[i].isspace():
            i += 1
        if i == n or dsn[i] != "=":
            raise _error(f"a word without '=' {shown} (quote a value holding spaces: "
                         "key='a b')")
        if key not in known:
            # The keyword is named only where it cannot be part of a mis-quoted password.
            named = f" {key!r}" if previous != "password" else ""
            raise _error(f"unknown keyword{named} {shown}")
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        value: list[str] = []
        if i < n and dsn[i] == "'":
            i += 1
            while True:
                if i == n:
                    raise _error(f"the quoted value of {key!r} is not closed")
                char = dsn[i]
                if char == "\\" and i + 1 < n:
                    value.append(dsn[i + 1])
                    i += 2
                elif char == "'":
                    i += 1
                    break
                else:
                    value.append(char)
                    i += 1
        else:
            while i < n and not dsn[i].isspace():
                if dsn[i] == "\\" and i + 1 < n:
                    value.append(dsn[i + 1])
                    i += 2
                else:
                    value.append(dsn[i])
                    i += 1
        params[key] = "".join(value)
        previous = key


def parse_dsn(dsn: str, *, what: str = "database.dsn") -> dict[str, str]:
    """The libpq keywords of ``dsn`` (a URI or ``key=value`` pairs).

    ``what`` names the setting in messages (``database.replicas[0]``).

    Raises
    ------
    ConfigError
        ``dsn`` is neither, or malformed; the message says where, never what.
    """
    try:
        return _parse(dsn)
    except ConfigError as exc:
        if what == "database.dsn":
            raise
        raise ConfigError(str(exc).replace("database.dsn", what, 1)) from None


def _parse(dsn: str) -> dict[str, str]:
    if not isinstance(dsn, str):
        raise ConfigError(f"database.dsn must be a string, got {type(dsn).__name__}")
    text = dsn.strip()
    if text.lower().startswith(_SCHEMES):
        return _parse_uri(text)
    if "://" in text.split("=", 1)[0]:
        raise _error("a URI must start with postgresql:// or postgres://")
    if "=" not in text:
        raise _error("expected a postgresql:// URI or key=value pairs")
    return _parse_pairs(text)
