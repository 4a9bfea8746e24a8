"""Dropping root: switch to ``--user``/``--group`` once the sockets are bound."""

from __future__ import annotations

import os

from qiao.config import ConfigError

__all__ = ["drop_privileges"]


def drop_privileges(user: str | None, group: str | None, *, initgroups: bool = False) -> None:
    """Switch the process to `group` and `user` (names or numeric ids); group first, while
    still allowed to. With `initgroups` (gunicorn's ``--initgroups``), the user's
    supplementary groups are kept besides `group`. Errors are one-line ``ConfigError``s."""
    # grp and pwd only when called for: a module the master imports is in every worker.
    if group is not None:
        import grp

        gid = _lookup(group, grp.getgrnam, "group", lambda g: g.gr_gid)
        try:
            os.setgroups([gid])
            os.setgid(gid)
        except OSError as e:
            raise ConfigError(f"--group: cannot switch to {group!r}: {e.strerror}") from None
    if user is not None:
        import pwd

        entry = _lookup(user, pwd.getpwnam, "user", lambda u: u)
        if isinstance(entry, int) and initgroups:
            entry = _by_uid(entry)
        uid = entry if isinstance(entry, int) else entry.pw_uid
        try:
            if group is None and not isinstance(entry, int):
                os.initgroups(entry.pw_name, entry.pw_gid)
                os.setgid(entry.pw_gid)
            elif initgroups and not isinstance(entry, int):
                os.initgroups(entry.pw_name, os.getgid())
            os.setuid(uid)
        except OSError as e:
            raise ConfigError(f"--user: cannot switch to {user!r}: {e.strerror}") from None


def _by_uid(uid: int):
    import pwd

    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return uid


def _lookup(name: str, by_name, what: str, pick):
    if name.isdigit():
        return int(name)
    try:
        return pick(by_name(name))
    except KeyError:
        raise ConfigError(f"--{what}: no such {what} {name!r}") from None
