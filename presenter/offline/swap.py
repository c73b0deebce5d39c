"""`presenter swap`: one person's face on another's video, only with a consent statement.

The method (DESIGN.md section 1): the target's expression on the source's neutral shape, drawn by the
rewired generator with the whole face masked and the source's reference frame as its style. The
installed renderers cannot draw that: the generator paints the lips window (128 px of the 256 px
crop; `presenter.render.generator`) and the baseline warps the avatar's own skin. So the command
checks everything a swap needs from the user (consent, readable inputs, a free output) and then
refuses with what is missing, rather than passing off a mouth-only render as a face swap.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from presenter.errors import UserError
from presenter.offline.lipsync import check_output, is_image
from presenter.offline.media import probe_video

MIN_CONSENT_CHARS = 20     # a statement, not a token: who agreed to what


@dataclass(frozen=True)
class SwapOptions:
    source: Path                  # image or video of the face to put in
    target: Path                  # video whose face is replaced
    output: Path                  # .mp4 to write
    consent: str | None           # statement that the people shown agreed
    force: bool = False


def check_consent(statement: str | None) -> str:
    """The stripped consent statement, or UserError saying what is needed."""
    text = (statement or "").strip()
    if not text:
        raise UserError("presenter swap puts one person's face into another's video: it needs --consent "
                        "\"STATEMENT\" saying that both people agreed (who, to what, when); the statement is stored "
                        "in the output's metadata with hashes of the inputs and the time")
    if len(text) < MIN_CONSENT_CHARS:
        raise UserError(f"--consent {text!r} is too short ({len(text)} characters, at least {MIN_CONSENT_CHARS}): "
                        "say who agreed to what, e.g. \"Ana Lima and Ben Okoro agreed on 2026-12-01 to this swap "
                        "for the course trailer\"")
    return text


def swap(opts: SwapOptions) -> Path:
    """Check consent and inputs, then make the swap. Bad input (and, today, the missing whole-face
    generator) raises UserError; nothing is written."""
    check_consent(opts.consent)
    check_output(opts.output, opts.force)
    for flag, path in (("--source", opts.source), ("--target", opts.target)):
        if not path.is_file():
            raise UserError(f"{flag} {path} does not exist")
    if not is_image(opts.source):
        probe_video(opts.source)
    if is_image(opts.target):
        raise UserError(f"--target {opts.target} is an image; give the video whose face is replaced")
    probe_video(opts.target)
    raise UserError("face swap needs a whole-face generator (trained with the whole face masked, the source's frame "
                    "as reference); the installed generator paints only the lips window and the baseline renderer "
                    "only warps the target's own face, so neither can draw the source's identity, and the trainer "
                    "('presenter train generator') masks the lips or the lower face only. Nothing was written "
                    "(docs/offline.md, 'Face swap')")
