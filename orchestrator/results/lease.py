"""One driver per results location: a lease (lock file or object) with holder, heartbeat and run number.

On a local disk the lease is ``RESULTS/lease.json`` held with ``flock``: the kernel drops
the lock when the holder dies, even by ``kill -9``, so a dead holder's lease is simply
taken over (with a message naming it). The file's content says who holds it (host, pid,
start time, run number) and is rewritten as a heartbeat, which is what counts where a
lock may not reach: a holder on another host whose heartbeat is fresh is never taken
over. On an object store (any pyarrow filesystem without locks) the lease is an object:
it is written with a random token and read back after a short settling time; the driver
whose token is read back holds it, and keeps checking that it still does at every
heartbeat. A lease whose holder is dead on this host, or whose heartbeat is older than
``STALE_S``, is stale and taken over. Run numbers are chosen while holding the lease.

A held lease can still be lost: a local lease file removed and re-created by another
driver, a holder on another host of a network filesystem (where ``flock`` does not reach)
that took over after our heartbeat went quiet, or an object rewritten by another driver.
Every heartbeat, and :meth:`Lease.verify` before each part file is published, reads the
lease back; once another holder is seen, :attr:`Lease.lost` names it, the heartbeat
stops, :meth:`Lease.release` leaves the new holder's lease alone, and the writer
(store.PartWriter) raises :class:`~tasks.errors.LeaseLostError` instead of writing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from tasks.errors import LeaseLostError, ResultsError

__all__ = ["LEASE_FILE", "HEARTBEAT_S", "STALE_S", "Holder", "Lease", "pid_alive", "this_host"]

LEASE_FILE = "lease.json"
HEARTBEAT_S = 10.0  # how often the holder rewrites its heartbeat
STALE_S = 120.0  # a heartbeat older than this (12 missed beats) marks a lease as abandoned
SETTLE_S = 1.0  # object stores: time between writing the lease and reading it back


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except (OverflowError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lease."""

    host: str
    pid: int
    started_at: str
    heartbeat: float  # seconds since the epoch
    run: int
    token: str

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        try:
            raw = json.loads(data)
            return cls(str(raw["host"]), int(raw["pid"]), str(raw["started_at"]), float(raw["heartbeat"]),
                       int(raw.get("run", 0)), str(raw.get("token", "")))
        except (ValueError, KeyError, TypeError):
            return None  # empty (being rewritten, or released) or not ours

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode()

    def age(self) -> float:
        return max(0.0, time.time() - self.heartbeat)

    def describe(self) -> str:
        return (f"{self.host} pid {self.pid}, started {self.started_at}, run {self.run}, "
                f"last heartbeat {self.age():.0f} s ago")

    def stale(self, *, stale_s: float = STALE_S) -> str | None:
        """Why this lease may be taken over, or None if its holder may still be working."""
        if self.host == this_host() and not pid_alive(self.pid):
            return "its process is gone"
        if self.age() > stale_s:
            return f"no heartbeat for {self.age():.0f} s"
        return None


class Lease:
    """The held lease of one results location; :meth:`release` it (or use ``with``)."""

    def __init__(self, store: Any, holder: Holder, fd: int | None, *, heartbeat_s: float) -> None:
        self._store = store
        self.holder = holder
        self._fd = fd
        self._stop = threading.Event()
        self.lost: str | None = None  # set when another driver took the lease from us
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), name="splitsweep-lease", daemon=True)
        self._thread.start()

    @property
    def run(self) -> int:
        return self.holder.run

    # -- taking it -----------------------------------------------------------------------
    @classmethod
    def acquire(
        cls,
        store: Any,
        *,
        next_run: Callable[[], int],
        out: TextIO | None = None,
        stale_s: float = STALE_S,
        heartbeat_s: float = HEARTBEAT_S,
        settle_s: float = SETTLE_S,
    ) -> Lease:
        path = store.path(LEASE_FILE)
        token = uuid.uuid4().hex
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

        def holder(run: int) -> Holder:
            return Holder(this_host(), os.getpid(), now, time.time(), run, token)

        if store.is_local:
            fd = _lock_local(path, store.location)
            try:
                with open(path, "rb") as fh:
                    previous = Holder.parse(fh.read())
                if previous is not None and previous.host != this_host() and previous.age() <= stale_s:
                    # flock may not reach across hosts (some network filesystems): trust the heartbeat
                    raise _held(previous, store.location)
                if previous is not None and out is not None:
                    out.write(f"lease: taking over the stale lease of {previous.describe()} "
                              f"({previous.stale(stale_s=stale_s) or 'lock released'})\n")
                mine = holder(next_run())
                _rewrite(fd, mine.to_bytes())
            except BaseException:
                os.close(fd)
                raise
            return cls(store, mine, fd, heartbeat_s=heartbeat_s)

        previous = _read_holder(store)
        if previous is not None:
            why = previous.stale(stale_s=stale_s)
            if why is None:
                raise _held(previous, store.location)
            if out is not None:
                out.write(f"lease: taking over the stale lease of {previous.describe()} ({why})\n")
        mine = holder(next_run())
        store.write_bytes(LEASE_FILE, mine.to_bytes())
        time.sleep(settle_s)  # a driver that wrote at the same time: the last write wins, both read it
        now_held = _read_holder(store)
        if now_held is None or now_held.token != token:
            if now_held is None:
                raise ResultsError("the lease object vanished while being taken; try again", file=path, key="lease")
            raise _held(now_held, store.location)
        return cls(store, mine, None, heartbeat_s=heartbeat_s)

    # -- keeping it ----------------------------------------------------------------------
    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.heartbeat()
            except OSError:
                pass  # a transient storage error; the next beat tries again

    def heartbeat(self) -> None:
        if self.lost:
            return
        if self._check() is not None:
            return
        beat = Holder(**{**asdict(self.holder), "heartbeat": time.time()})
        if self._fd is not None:
            _rewrite(self._fd, beat.to_bytes())
        else:
            self._store.write_bytes(LEASE_FILE, beat.to_bytes())
        self.holder = beat

    def verify(self) -> None:
        """Read the lease back now; raise LeaseLostError when another driver holds it."""
        if self.lost is None:
            self._check()
        if self.lost is not None:
            raise LeaseLostError(
                f"another driver took this run's lease while it was writing: {self.lost}; "
                f"this run (run {self.run}) stopped and stores nothing further (rows stored so far are kept; "
                "the new holder runs what is left)",
                file=self._store.location,
                key="lease",
            )

    def _check(self) -> str | None:
        """Set and return :attr:`lost` when the lease in storage is no longer ours."""
        if self._fd is not None:
            current = self._check_local()
        else:
            current = _read_holder(self._store)
            if current is None:  # removed (by hand?): nobody else holds it; take it back
                return None
        if current is not None and current.token != self.holder.token:
            self.lost = current.describe()
        return self.lost

    def _check_local(self) -> Holder | None:
        """The holder in the file at the lease's path (ours, or the one that replaced it)."""
        import fcntl

        path = self._store.path(LEASE_FILE)
        try:
            replaced = os.stat(path).st_ino != os.fstat(self._fd).st_ino
        except FileNotFoundError:
            # Removed under us: take it back unless another driver re-creates it first.
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                replaced = True
            else:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    replaced = True
                else:
                    _rewrite(fd, self.holder.to_bytes())
                    os.close(self._fd)
                    self._fd = fd
                    return self.holder
        if replaced:
            try:
                with open(path, "rb") as fh:
                    return Holder.parse(fh.read())
            except OSError:
                return None
        # Our file: another host (no flock across a network filesystem) may have rewritten it.
        return Holder.parse(os.pread(self._fd, 1 << 16, 0))

    def release(self) -> None:
        """Give the lease back: the lease file / object is removed."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        path = self._store.path(LEASE_FILE)
        if self._fd is not None:
            if not self.lost and self._check() is None:
                try:
                    os.unlink(path)  # still locked by us: a waiting driver re-checks the inode (see _lock_local)
                except OSError:
                    pass
            os.close(self._fd)
            self._fd = None
        elif not self.lost:
            try:
                current = _read_holder(self._store)
                if current is not None and current.token == self.holder.token:
                    self._store.filesystem.delete_file(path)
            except OSError:
                pass

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _held(holder: Holder, location: str) -> ResultsError:
    return ResultsError(
        f"another splitsweep run is writing here: {holder.describe()}; wait for it to finish, stop it, "
        f"or use another output location",
        file=location,
        key="lease",
    )


def _lock_local(path: str, location: str) -> int:
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                with open(path, "rb") as fh:
                    holder = Holder.parse(fh.read())
            except OSError:
                holder = None
            os.close(fd)
            if holder is None:
                raise ResultsError("another splitsweep run is writing here (lease locked)", file=location,
                                   key="lease") from None
            raise _held(holder, location) from None
        except OSError:
            os.close(fd)
            raise
        # The holder we waited for may have removed the file as it released it: the lock
        # we hold is then on a deleted inode. Lock the file that is there now instead.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _rewrite(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _read_holder(store: Any) -> Holder | None:
    try:
        return Holder.parse(store.read_bytes(LEASE_FILE))
    except FileNotFoundError:
        return None
