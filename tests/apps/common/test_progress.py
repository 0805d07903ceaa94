"""Progress bars: on a terminal a tqdm bar on stderr; off with quiet and when stderr is not a terminal."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import sys
import termios

from apps.common.progress import progress_bar


def test_given_stderr_is_not_a_terminal_when_asked_for_a_bar_then_none(capsys):
    assert progress_bar(10, "x") is None


def test_given_a_terminal_when_asked_for_a_bar_then_tqdm_draws_on_stderr_unless_quiet(monkeypatch):
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a fresh pty has 0 columns
    with os.fdopen(slave, "w") as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        assert progress_bar(10, "x", quiet=True) is None
        bar = progress_bar(10, "import", unit="candle")
        assert bar is not None
        bar.update(4)
        bar.close()
        tty.flush()
        drawn = ""
        while select.select([master], [], [], 0.2)[0]:
            drawn += os.read(master, 65536).decode(errors="replace")
    os.close(master)
    assert "import" in drawn and "4/10" in drawn
