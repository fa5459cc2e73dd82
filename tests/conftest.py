import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # audio_fixtures, fakes


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test runs in its own folder, with no user config and no NARRATOR_* settings of the host."""
    for name in list(os.environ):
        if name.startswith("NARRATOR_") or name == "ELEVENLABS_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # no user config unless a test writes one
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # nothing written to the host's ~/.cache
    monkeypatch.chdir(tmp_path)
    return tmp_path
