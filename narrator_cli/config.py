"""One place that resolves settings.

Highest first: command-line options, environment variables, the nearest
``narrator.toml`` from the current folder upwards (paths relative to that
file's folder), the user config file, built-in defaults. The cache folder has
one more project-level source, below narrator.toml and above the user config:
the folder the project's Motion Canvas narrator plugin serves (its vite.config),
read only when nothing above sets ``audio_path``. Secrets (API keys,
tokens) are read from the environment and the user config only: a project
file is committed, so one that holds a secret is refused.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import UsageError

PROJECT_FILE = "narrator.toml"
USER_FILE = "config.toml"
SECRETS = {"api_key", "token", "elevenlabs.api_key", "minimax.api_key"}
NOT_IN_PROJECT = {"storage"}  # refused in narrator.toml like a secret: where a team's bucket is is not committed
# setting -> (type, environment variable)
FIELDS: dict[str, tuple[type | tuple[type, ...], str | None]] = {
    "provider": (str, "NARRATOR_PROVIDER"),
    "voice": (str, "NARRATOR_VOICE"),
    "model": (str, "NARRATOR_MODEL"),
    "audio_path": (str, "NARRATOR_AUDIO_PATH"),
    "concurrency": (int, "NARRATOR_CONCURRENCY"),
    "format": (str, "NARRATOR_FORMAT"),
    "budget": (int, "NARRATOR_BUDGET"),  # the most characters a batch may bill (after the model's multiplier)
    "server": (str, "NARRATOR_SERVER"),
    "storage": (str, "NARRATOR_STORAGE"),  # serve's bucket, s3://BUCKET/PREFIX: a deployment's, never a project's
    "token": (str, "NARRATOR_TOKEN"),
    "ca_file": (str, "NARRATOR_CA_FILE"),  # PEM certificates an https/wss server is checked against (a team's CA)
    "insecure": (bool, "NARRATOR_INSECURE"),  # send the token over plain http to another machine anyway
    "serve.host": (str, "NARRATOR_SERVE_HOST"),
    "serve.port": (int, "NARRATOR_SERVE_PORT"),
    "serve.max_age": (str, "NARRATOR_SERVE_MAX_AGE"),
    "serve.max_cache_size": (str, "NARRATOR_SERVE_MAX_CACHE_SIZE"),
    "serve.max_file_size": ((int, float), "NARRATOR_SERVE_MAX_FILE_SIZE"),
    "elevenlabs.api_key": (str, "ELEVENLABS_API_KEY"),
    "elevenlabs.base_url": (str, "NARRATOR_ELEVENLABS_BASE_URL"),
    "elevenlabs.output_format": (str, "NARRATOR_ELEVENLABS_OUTPUT_FORMAT"),
    "elevenlabs.timeout": ((int, float), "NARRATOR_ELEVENLABS_TIMEOUT"),
    "elevenlabs.retries": (int, "NARRATOR_ELEVENLABS_RETRIES"),
    "minimax.api_key": (str, "MINIMAX_API_KEY"),
    "minimax.endpoint": (str, "NARRATOR_MINIMAX_ENDPOINT"),
    "minimax.format": (str, "NARRATOR_MINIMAX_FORMAT"),
    "minimax.timeout": ((int, float), "NARRATOR_MINIMAX_TIMEOUT"),
    "minimax.retries": (int, "NARRATOR_MINIMAX_RETRIES"),
    "captions.format": (str, None),
    "captions.gap": ((int, float), None),
    "captions.max_chars": (int, None),
    "captions.max_lines": (int, None),
    "captions.max_seconds": ((int, float), None),
    "captions.pause": ((int, float), None),
}
BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
ALIASES = {"api_key": "elevenlabs.api_key"}
CHOICES = {"provider": "NAMES", "format": "FORMATS"}  # settings whose values the providers package lists
NARRATORS = "narrators"  # [narrators.NAME]: options of a Motion Canvas narrator that its source does not give
SECRET_OPTIONS = {"apikey", "api_key", "token"}  # never in a [narrators.NAME] table, in any file
DEFAULTS: dict[str, object] = {"provider": "espeak", "audio_path": "audio-cache", "concurrency": 4}


class Settings:
    def __init__(self, values: dict[str, object], project_file: Path | None, base_dir: Path,
                 editor: object = None, warnings: list[str] | None = None) -> None:
        self.values = values
        self.project_file = project_file
        self.base_dir = base_dir  # audio_path is relative to this
        self.editor = editor  # project.vite.EditorFolder when the cache folder came from vite.config
        self.warnings = warnings or []  # for the command to print (the core never prints)

    @property
    def narrators(self) -> dict[str, dict]:
        """``[narrators.NAME]`` tables: NAME -> {option: value}."""
        return self.values.get(NARRATORS) or {}  # type: ignore[return-value]

    def get(self, name: str, default: object = None) -> object:
        return self.values.get(name, default)

    @property
    def provider(self) -> str:
        return str(self.values["provider"])

    @property
    def audio_path(self) -> Path:
        return (self.base_dir / str(self.values["audio_path"])).resolve()

    def section(self, prefix: str) -> dict[str, object]:
        """Settings under ``prefix.``, e.g. what a provider is configured with."""
        return {k.split(".", 1)[1]: v for k, v in self.values.items() if k.startswith(prefix + ".")}


def user_config_path() -> Path:
    if env := os.environ.get("NARRATOR_CONFIG"):
        return Path(env)
    if sys.platform == "linux":  # what platformdirs answers there, without its 3 ms import on every call
        xdg = os.environ.get("XDG_CONFIG_HOME", "").strip()
        return Path(xdg if xdg else os.path.expanduser("~/.config")) / "narrator" / USER_FILE
    from platformdirs import user_config_dir

    return Path(user_config_dir("narrator", appauthor=False)) / USER_FILE


def user_cache_path() -> Path:
    """The user's cache folder for narrator (not the audio cache: small files that save work)."""
    if sys.platform == "linux":  # what platformdirs answers there, without its import
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        return Path(xdg if xdg else os.path.expanduser("~/.cache")) / "narrator"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("narrator", appauthor=False))


def find_project_file(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


def load(options: dict[str, object] | None = None, cwd: Path | None = None) -> Settings:
    """Settings from every source; ``options`` are the command line's (None means unset)."""
    cwd = cwd or Path.cwd()
    values: dict[str, object] = dict(DEFAULTS)
    base_dir = cwd
    user = user_config_path()
    if user.is_file():
        values.update(read_file(user, allow_secrets=True))
    elif os.environ.get("NARRATOR_CONFIG"):
        raise UsageError(f"NARRATOR_CONFIG names {user}, which is not a file")
    project = find_project_file(cwd)
    folder_set = False  # by a source above the editor's folder
    if project:
        from_project = read_file(project, allow_secrets=False)
        values.update(from_project)
        base_dir = project.parent
        folder_set = "audio_path" in from_project
    for name, (kind, env) in FIELDS.items():
        raw = os.environ.get(env) if env else None
        if raw not in (None, ""):
            values[name] = _coerce(name, raw, kind, env)
            folder_set = folder_set or name == "audio_path"
    if options and options.get("audio_path") is not None:
        base_dir = cwd  # a path typed on the command line is relative to where it was typed
        folder_set = True
    for name, value in (options or {}).items():
        if value is not None:
            values[name] = value
    editor, warnings = None, []
    if not folder_set:
        editor, warning = editor_folder(cwd)
        if editor is not None:
            values["audio_path"] = editor.folder
            base_dir = project_root(cwd)
        if warning:
            warnings.append(warning)
    return Settings(values, project, base_dir, editor, warnings)


def project_root(start: Path) -> Path | None:
    """The nearest folder upwards with package.json or narrator.toml: a project's root."""
    start = start.absolute()
    for folder in (start, *start.parents):
        if (folder / "package.json").is_file() or (folder / PROJECT_FILE).is_file():
            return folder
    return None


def editor_folder(cwd: Path) -> tuple[object, str | None]:
    """The folder the project's Motion Canvas narrator plugin serves (``EditorFolder`` or None), and a warning
    when its vite.config does not say it as a literal. Parses only when the project has a vite.config."""
    root = project_root(cwd)
    if root is None:
        return None, None
    from .project import vite

    found = vite.remembered_editor_folder(root, user_cache_path() / "editor-folders.json")
    if found is None or found.folder is None:
        return None, found.warning if found else None
    return found, None


def read_file(path: Path, allow_secrets: bool) -> dict[str, object]:
    import tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not valid TOML: not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    flat: dict[str, object] = {}
    if NARRATORS in data:
        flat[NARRATORS] = _narrator_tables(path, data.pop(NARRATORS))
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                flat[f"{key}.{sub}"] = subvalue
        else:
            flat[ALIASES.get(key, key)] = value
    for name, value in flat.items():
        if name == NARRATORS:
            continue
        if name not in FIELDS:
            raise UsageError(f"{path}: unknown setting {name!r}")
        if name in NOT_IN_PROJECT and not allow_secrets:
            raise UsageError(f"{path}: {name!r} names a deployment's storage and does not belong in a project file; "
                             f"use the environment or {user_config_path()}")
        if name in SECRETS and not allow_secrets:
            raise UsageError(
                f"{path}: {name!r} is a secret and does not belong in a project file; "
                f"use the environment or {user_config_path()}"
            )
        kind = FIELDS[name][0]
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise UsageError(f"{path}: {name!r} must be {_kind_name(kind)}, got {value!r}")
    if "concurrency" in flat:
        _check_concurrency(flat["concurrency"], f"{path}: 'concurrency'")
    for name in CHOICES.keys() & flat.keys():
        _check_choice(name, str(flat[name]), f"{path}: {name!r}")
    return flat


def _narrator_tables(path: Path, tables: object) -> dict[str, dict]:
    """``[narrators.NAME]`` tables: options (strings and numbers) of the narrator a scene file creates as NAME."""
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise UsageError(f"{path}: 'narrators' must hold tables such as [narrators.narrator]")
    for name, options in tables.items():
        for option, value in options.items():
            if option.lower() in SECRET_OPTIONS:
                raise UsageError(f"{path}: {option!r} in [narrators.{name}] is a secret and does not belong in a "
                                 f"config file; the editor reads it from its own environment")
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise UsageError(f"{path}: [narrators.{name}] {option!r} must be a string or a number, got {value!r}")
    return tables


def _coerce(name: str, raw: str, kind: type | tuple[type, ...], env: str) -> object:
    if name in CHOICES:
        _check_choice(name, raw, env)
    if kind is str:
        return raw
    if kind is bool:
        if raw.strip().lower() not in BOOLEANS:
            raise UsageError(f"environment variable {env} must be 1 or 0 (true or false), got {raw!r}")
        return BOOLEANS[raw.strip().lower()]
    try:
        value: object = int(raw) if kind is int else float(raw)
    except ValueError:
        raise UsageError(f"environment variable {env} must be {_kind_name(kind)}, got {raw!r}") from None
    if name == "concurrency":
        _check_concurrency(value, env)
    return value


def _check_choice(name: str, value: str, where: str) -> None:
    from . import providers

    choices = sorted(getattr(providers, CHOICES[name]))
    if value not in choices:
        raise UsageError(f"{where} must be one of {', '.join(choices)}, got {value!r}")


def _check_concurrency(value: object, where: str) -> None:
    if not isinstance(value, int) or not 1 <= value <= 64:
        raise UsageError(f"{where} must be a whole number from 1 to 64, got {value!r}")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return {str: "a string", int: "a whole number", bool: "true or false"}.get(kind, "a number")  # type: ignore[call-overload]
