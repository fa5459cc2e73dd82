"""A helper process that decodes a large upload's base64 on another core.

Decoding the ~60 MB of base64 in a 45 MiB upload costs ~0.2 s of CPU in
``binascii``, which holds the GIL: in the server's process it adds to the
upload's time and to everyone else's wait. So while a large message is still
arriving, the server writes its base64 to the stdin of a plain interpreter
running this file (standard library only, started with ``-I -S``), which
decodes it strictly, writes the audio into the staged file it was handed and
answers ``<sha256> <size>``. The server meanwhile only receives and unmasks.

The helper is only a speed-up. If it cannot start, dies, or finds the data
invalid, the server decodes the message itself, which is always correct and
also produces the error reply.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import subprocess
import sys
import threading
from concurrent.futures import Future

READ = 1 << 20  # also the pipe's size where the platform lets us set it
_PAD = ord("=")


def decode(src: int, dst: int) -> tuple[str, int]:
    """Strict base64 from file descriptor ``src`` until EOF into ``dst``: (sha256 hex, size).
    ``binascii.Error`` or ``ValueError`` for anything the server's own decoder would refuse."""
    digest, size, held = hashlib.sha256(), 0, b""
    while True:
        data = os.read(src, READ)
        if not data:
            break
        if held:
            data = held + data
        # Keep the last 1-4 characters back: only the final quad may hold padding.
        cut = (len(data) - 1) // 4 * 4
        held = data[cut:]
        if cut:
            with memoryview(data)[:cut] as piece:
                if piece[-1] == _PAD:
                    raise ValueError("padding before the end")
                size += _write(dst, digest, binascii.a2b_base64(piece, strict_mode=True))
    if len(held) % 4:
        raise ValueError("base64 length is not a multiple of 4")
    size += _write(dst, digest, binascii.a2b_base64(held, strict_mode=True))
    return digest.hexdigest(), size


def _write(fd: int, digest: hashlib._Hash, audio: bytes) -> int:
    digest.update(audio)
    view = memoryview(audio)
    while view:
        view = view[os.write(fd, view):]
    return len(audio)


class Helper:
    """One helper process, decoding one upload into the file open at ``dst``."""

    def __init__(self, dst: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", __file__, str(dst)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=(dst,))
        assert self.proc.stdin is not None
        self._pipe = self.proc.stdin.fileno()
        os.set_blocking(self._pipe, False)
        try:  # Linux: room for more than 64 KiB between two reads of the helper
            import fcntl

            fcntl.fcntl(self._pipe, fcntl.F_SETPIPE_SZ, READ)
        except (ImportError, AttributeError, OSError):
            pass

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Hand over what the pipe takes without waiting: how many bytes it took.
        ``OSError`` (a broken pipe) if the helper is gone."""
        try:
            return os.write(self._pipe, data)
        except BlockingIOError:
            return 0

    def finish(self, rest: memoryview) -> Future[tuple[str, int] | None]:
        """Send ``rest``, end the input, and resolve to the helper's (sha256, size), or
        None if it failed in any way. Waits on a thread: ``rest`` must not change meanwhile."""
        done: Future[tuple[str, int] | None] = Future()
        done.set_running_or_notify_cancel()  # so that a waiter giving up cannot cancel it under the thread

        def run() -> None:
            result = None
            try:
                os.set_blocking(self._pipe, True)
                view = rest
                while view:
                    view = view[os.write(self._pipe, view):]
                assert self.proc.stdin is not None and self.proc.stdout is not None
                self.proc.stdin.close()
                answer = self.proc.stdout.read()
                if self.proc.wait() == 0:
                    digest, size = answer.split()
                    result = digest.decode("ascii"), int(size)
            except (OSError, ValueError):
                pass
            finally:
                self.kill()  # reaps it, whatever happened
                done.set_result(result)

        threading.Thread(target=run, name="decoder-helper", daemon=True).start()
        return done

    def kill(self) -> None:
        """Stop it now (safe to repeat, and from any thread): whatever it wrote is the caller's to delete."""
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


def start(dst: int) -> Helper | None:
    """A helper decoding into ``dst``, or None where one cannot be started."""
    try:
        return Helper(dst)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def main(argv: list[str]) -> int:
    try:
        digest, size = decode(0, int(argv[0]))
    except (binascii.Error, ValueError, OSError):
        return 1
    sys.stdout.write(f"{digest} {size}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
