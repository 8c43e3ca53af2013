"""Terminal keyboard in raw mode (termios/tty): works on a local console, over SSH and through a pseudo-terminal.

`KeyReader` puts the terminal (stdin or a tty device path) in raw mode, reads key presses in a thread and hands each
character to a callback; the terminal settings are restored on `close()`. Ctrl-C (0x03) is passed on as "\\x03"."""

from __future__ import annotations

import os
import select
import sys
import termios
import threading
import tty
from collections.abc import Callable

from wm_vla.teleop.errors import TeleopConfigError


class KeyReader:
    def __init__(self, on_key: Callable[[str], None], device: str = "") -> None:
        self.on_key = on_key
        self.owned = bool(device)
        try:
            self.fd = os.open(device, os.O_RDONLY | os.O_NOCTTY) if device else sys.stdin.fileno()
        except (OSError, ValueError) as exc:
            raise TeleopConfigError(f"cannot open keyboard device {device or 'stdin'}: {exc}") from exc
        if not os.isatty(self.fd):
            self._close_fd()
            raise TeleopConfigError(f"keyboard input needs a terminal; {device or 'stdin'} is not a tty "
                                    "(run in a terminal, over ssh -t, or pass keyboard_device:=/dev/pts/N)")
        self.saved = termios.tcgetattr(self.fd)
        tty.setraw(self.fd, termios.TCSANOW)
        self.running = True
        self.thread = threading.Thread(target=self._loop, name="keyboard", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while self.running:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 64)
            except OSError:
                break
            if not data:
                break
            for ch in data.decode(errors="ignore"):
                self.on_key(ch)

    def _close_fd(self) -> None:
        if self.owned:
            os.close(self.fd)

    def close(self) -> None:
        self.running = False
        self.thread.join(1.0)
        try:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        except termios.error:
            pass
        self._close_fd()
