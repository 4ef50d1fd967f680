"""One writer per sweep: `run`, `resume` and `sync` hold the sweep's lock while they write
its record (docs/design.md §4).

Two processes writing one sweep corrupt it in ways no later step can undo: two
`resume`s train the same trials into one Tune folder (each deleting the other's
checkpoints), two `sync`s each create a parent run and a child per trial. So each
command takes the lock before Ray starts or anything is recorded, and a second one
stops in one line naming the holder (exit 2).

    SWEEP_DIR/lock.json   {"host", "pid", "started", "command", "token", "beat"}

- A local folder: the kernel's `flock` on that file, held for the life of the process,
  so it is released by any exit, a kill -9 included; the JSON only names the holder. A
  file still naming a holder whose flock is gone was left by a process that died: the
  next writer takes it over, with one line saying so.
- An object store (s3://, gs://): no locks, and pyarrow cannot make a conditional put,
  so the lock is an object created when absent, then read back after SETTLE_S: of two
  writers racing, the one whose object survived holds it (S3 reads its writes
  strongly since 2020). The holder rewrites `beat` every BEAT_S; a lock whose beat is
  older than STALE_S, or whose process on this host is gone, is stale and taken over.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from typing import Any

from bnsweep.errors import UsageError
from bnsweep.storage import delete, exists, join, read_text, write_text

LOCK_FILE = "lock.json"
SETTLE_S = 1.0  # an object-store writer waits this long before it reads its lock back
BEAT_S = 20.0  # an object-store holder rewrites its lock this often ...
STALE_S = 90.0  # ... and one silent for this long is gone (a crashed driver, a lost node)


class LockedError(UsageError):
    """Another process is writing this sweep."""


def _holder_text(h: dict[str, Any]) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("started", 0)))
    return f"`{h.get('command', 'bnsweep')}` (pid {h.get('pid')} on {h.get('host')}, since {since})"


def _alive_here(holder: dict[str, Any]) -> bool | None:
    """Whether the holder's process runs, where this process can tell (same host); else None."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return None
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class SweepLock:
    """The lock of one sweep, as a context manager: `with SweepLock(sweep_dir, "bnsweep resume"):`.

    Raises LockedError on entry when another live process holds it."""

    def __init__(self, sweep_dir: str, command: str):
        self.sweep_dir, self.path = sweep_dir, join(sweep_dir, LOCK_FILE)
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                   "command": command, "token": secrets.token_hex(8)}
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> None:
        if self._fd is None and self._beat is None:
            if "://" in self.sweep_dir:
                self._take_remote()
            else:
                self._take_local()

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _refused(self, holder: dict[str, Any]) -> LockedError:
        return LockedError(f"{self.sweep_dir} is being written by {_holder_text(holder)}; one process writes a "
                           "sweep at a time: wait for it to end (or stop it), then try again")

    def _took_over(self, holder: dict[str, Any]) -> None:
        print(f"note: took over the lock of {self.sweep_dir} left by {_holder_text(holder)}, which is gone",
              flush=True)

    # A local folder: flock.

    def _take_local(self) -> None:
        import fcntl

        os.makedirs(self.sweep_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_fd(fd)
            os.close(fd)
            raise self._refused(holder) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        left = _read_fd(fd)
        if left.get("token"):  # a holder that ended without releasing: it died
            self._took_over(left)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.me).encode(), 0)
        os.fsync(fd)

    # An object store: create when absent, settle, read back; a heartbeat.

    def _take_remote(self) -> None:
        held = self._read_remote()
        if held is not None and not self._stale(held):
            raise self._refused(held)
        self._write_remote()
        time.sleep(SETTLE_S)
        now = self._read_remote()
        if now is None or now.get("token") != self.me["token"]:
            raise self._refused(now or held or {})
        if held is not None:
            self._took_over(held)
        self._beat = threading.Thread(target=self._beating, name="bnsweep-lock-beat", daemon=True)
        self._beat.start()

    def _read_remote(self) -> dict[str, Any] | None:
        try:
            return json.loads(read_text(self.path)) if exists(self.path) else None
        except (FileNotFoundError, ValueError):  # released meanwhile, or a half-written object
            return None

    def _write_remote(self) -> None:
        write_text(self.path, json.dumps({**self.me, "beat": time.time()}))

    def _stale(self, holder: dict[str, Any]) -> bool:
        alive = _alive_here(holder)
        if alive is not None:
            return not alive
        return time.time() - float(holder.get("beat", 0)) > STALE_S

    def _beating(self) -> None:
        while not self._stop.wait(BEAT_S):
            try:
                self._write_remote()
            except Exception:  # noqa: BLE001 — a missed beat; the next one may land (STALE_S > 4 beats)
                pass

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            os.ftruncate(self._fd, 0)  # a clean release leaves no holder named
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._beat is not None:
            self._stop.set()
            self._beat.join()
            self._beat = None
            held = self._read_remote()
            if held is not None and held.get("token") == self.me["token"]:
                delete(self.path)


def _read_fd(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 4096, 0).decode()
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
