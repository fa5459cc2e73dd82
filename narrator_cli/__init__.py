"""narrator: a command-line tool and team cache server for text-to-speech narration."""

__version__ = "0.1.0"
