"""Commands that obey file permissions even when the tests run as root (CI does).

Root reads and deletes anything; with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
dropped from its bounding set (util-linux's ``setpriv``), a process of root's is
held to a folder's mode bits like anyone else, so ``chmod 000`` means what it says.
"""

from __future__ import annotations

import os
import shutil

_DROP = "-dac_override,-dac_read_search"


def as_user(cmd: list[str]) -> list[str]:
    """``cmd``, run so that permission bits apply to it."""
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("running as root needs setpriv (util-linux) to test permission errors")
    return [setpriv, f"--bounding-set={_DROP}", f"--inh-caps={_DROP}", *cmd]
