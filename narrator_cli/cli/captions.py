"""``narrator captions``: SRT, WebVTT or word JSON for lines and whole scripts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import Interrupted, NarratorError, UsageError
from .output import (
    CaFileOpt,
    FileOpt,
    InsecureOpt,
    ModelOpt,
    NoServerOpt,
    PathOpt,
    ProviderOpt,
    ServerOpt,
    TokenOpt,
    VoiceOpt,
    fail,
    interrupted,
    plural,
    read_script,
    settings_for,
    texts_to_lines,
    warn,
)

FormatOpt = Annotated[str | None, typer.Option("--format", help="srt, vtt or json \\[default: srt, or [captions] "
                                                  "format].", show_default=False)]
GapOpt = Annotated[float | None, typer.Option("--gap", help="Seconds between consecutive lines \\[default: 0].",
                                                 show_default=False)]
MaxCharsOpt = Annotated[int | None, typer.Option("--max-chars", help="Characters per caption line "
                                                    "\\[default: 42].", show_default=False)]
MaxLinesOpt = Annotated[int | None, typer.Option("--max-lines", help="Lines per cue \\[default: 2].",
                                                    show_default=False)]
MaxSecondsOpt = Annotated[float | None, typer.Option("--max-seconds", help="Longest cue \\[default: 4].",
                                                        show_default=False)]
PauseOpt = Annotated[float | None, typer.Option("--pause", help="A pause longer than this starts a new cue "
                                                   "\\[default: 0.8].", show_default=False)]


def captions(
    text: Annotated[list[str] | None, typer.Argument(help="Lines, each one narration (with --scan: the project "
                                                        "folder or file).", show_default=False)] = None,
    file: FileOpt = None,
    scan: Annotated[bool, typer.Option("--scan", help="The lines of the Motion Canvas project at TEXT (default: "
                                       "the project root), in the scan's order.")] = False,
    fmt: FormatOpt = None,
    gap: GapOpt = None,
    out: Annotated[Path | None, typer.Option(help="Write the captions to this file \\[default: stdout].",
                                                show_default=False)] = None,
    max_chars: MaxCharsOpt = None,
    max_lines: MaxLinesOpt = None,
    max_seconds: MaxSecondsOpt = None,
    pause: PauseOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Regenerate the lines whose word timings would be "
                                        "estimated, where the provider can time words (at its cost).")] = False,
    provider: ProviderOpt = None,
    voice: VoiceOpt = None,
    model: ModelOpt = None,
    server: ServerOpt = None,
    no_server: NoServerOpt = False,
    token: TokenOpt = None,
    ca_file: CaFileOpt = None,
    insecure: InsecureOpt = False,
    audio_path: PathOpt = None,
) -> None:
    """Captions for lines or a whole script, with word timings; lines not cached yet are generated first.

    Each line starts where the one before it ends, plus --gap. Audio that came without word timings (recordings,
    the editor's uploads) gets timings estimated by character count, and says so.

    Example: narrator captions --file script.txt --format vtt --gap 0.5 --out script.vtt
    """
    from ..captions import script

    try:
        if scan:
            from .project import scan_project, scan_target

            settings, found = scan_project(scan_target(text, file=file, provider=provider, voice=voice, model=model),
                                           audio_path=audio_path, server=server, token=token,
                                           ca_file=ca_file, insecure=insecure or None)
        else:
            settings = settings_for(provider=provider, voice=voice, model=model, audio_path=audio_path,
                                    server=server, token=token, ca_file=ca_file, insecure=insecure or None)
        chosen = script.caption_format(fmt, settings)
        rules, between = script.rules_and_gap(settings, gap=gap, max_chars=max_chars, max_lines=max_lines,
                                              max_seconds=max_seconds, pause=pause)
        target = _target(out)
        if scan:
            lines = _scanned_lines(settings, found, force, no_server)
        else:
            texts = list(text or []) + (read_script(file) if file else [])
            lines = _spoken_lines(settings, texts_to_lines(settings, texts), force, no_server)
        timed, cues = script.timeline(lines, rules, between)
        body = script.render(chosen, timed, cues).encode()
        estimated = sum(line.estimated for line in timed)
        if estimated:
            warn(f"{plural(estimated, 'line')} of {len(timed)} had no word timings (recordings, the editor's uploads):"
                 f" estimated by character count; --force regenerates those a provider can time, at its cost")
        if target is None:
            sys.stdout.buffer.write(body)
            sys.stdout.flush()
        else:
            from ..export import put

            put(target, body)
            seconds = timed[-1].start + timed[-1].duration if timed else 0.0
            print(f"narrator: {plural(len(cues), 'cue')} for {plural(len(timed), 'line')} ({seconds:.1f} s) "
                  f"written to {target}", file=sys.stderr)
    except (Interrupted, KeyboardInterrupt) as exc:
        raise interrupted(exc) from None
    except NarratorError as exc:
        raise fail(exc) from None


def _target(out: Path | None) -> Path | None:
    """Where the captions go (None: stdout), checked before anything is generated."""
    if out is None or str(out) == "-":
        return None
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: name the caption file")
    parent = (out.resolve() if out.is_symlink() else out.absolute()).parent
    if not parent.is_dir():
        raise UsageError(f"--out {out}: the folder {parent} does not exist")
    return out


def _spoken_lines(settings: Any, lines: list, force: bool, no_server: bool) -> list[tuple[str, str, dict, float]]:
    """(text, key, metadata, duration) of each line, generating what is missing (``force``: also the lines
    that have no word timings, when the provider can time words)."""
    from ..providers import WORD_TIMINGS
    from .speak import speak_lines

    results = _all_spoken(speak_lines(settings, lines, False, no_server, False, sys.stderr, quiet=True))
    if force and settings.provider in WORD_TIMINGS:
        untimed = _untimed(results)
        if untimed:
            redone = _all_spoken(speak_lines(settings, [lines[i] for i in untimed], True, no_server, False,
                                             sys.stderr, quiet=True))
            for i, r in zip(untimed, redone):
                results[i] = r
    return [(r.line.text, r.line.key, r.entry.meta, r.entry.duration) for r in results]


def _all_spoken(results: list) -> list:
    failed = [r for r in results if r.entry is None]
    if failed:
        raise NarratorError(f"{len(failed)} of {len(results)} lines failed, so no captions were written "
                            f"(first: {failed[0].error})")
    return results


def _untimed(results: list) -> list[int]:
    """Indexes of the lines whose entries hold no word timings that fit them."""
    from ..captions.words import from_meta

    return [i for i, r in enumerate(results) if from_meta(r.entry.meta, r.line.text, r.entry.duration) is None]


def _scanned_lines(settings: Any, found: Any, force: bool, no_server: bool) -> list[tuple[str, str, dict, float]]:
    """Each keyed narration of the scan, in its order, with its entry (generated when missing); dynamic lines
    are named and left out."""
    import dataclasses

    from ..providers import WORD_TIMINGS
    from .project import shown_text, speak_found

    for n in found.narrations:
        if n.key is None:
            warn(f"{n.file}:{n.line}: {'dynamic narration' if n.text is None else 'no key'}, not in the captions: "
                 f"{shown_text(n.as_dict())}")
    keyed = [n for n in found.narrations if n.key is not None]
    results, fatal = speak_found(settings, found, False, no_server, False, sys.stderr, quiet=True)
    by_key = {r.line.key: r for r in results if r.entry is not None}
    if force:
        from ..captions.words import from_meta

        redo = [n for n in keyed if n.narrator.provider in WORD_TIMINGS and n.key in by_key
                and from_meta(by_key[n.key].entry.meta, n.text, by_key[n.key].entry.duration) is None]
        if redo:
            again, fatal2 = speak_found(settings, dataclasses.replace(found, narrations=redo), True, no_server,
                                        False, sys.stderr, quiet=True)
            fatal = fatal or fatal2
            by_key.update({r.line.key: r for r in again if r.entry is not None})
    if fatal is not None:
        raise fatal
    missing = [n for n in keyed if n.key not in by_key]
    if missing:
        raise NarratorError(f"{plural(len(missing), 'line')} could not be made, so no captions were written "
                            f"(first: {missing[0].file}:{missing[0].line})")
    return [(n.text, n.key, by_key[n.key].entry.meta, by_key[n.key].entry.duration) for n in keyed]
