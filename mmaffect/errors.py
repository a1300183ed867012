"""Errors that carry a message a user can act on.

Every error raised for bad input or a missing dependency is an :class:`MmaffectError`. Its
``str()`` is one line that says what is wrong and, where there is one, how to fix it; batch
commands print exactly that line next to the file name and go on with the next file.
"""

from __future__ import annotations


class MmaffectError(Exception):
    """Base class: an expected failure with a one-line, user-facing reason."""

    def __init__(self, message: str, *, hint: str | None = None, detail: str | None = None):
        self.message = message
        self.hint = hint
        # Longer text (e.g. ffmpeg's stderr) kept for --verbose output, never in the one-liner.
        self.detail = detail
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class FFmpegNotFound(MmaffectError):
    """No usable ffmpeg binary: neither on PATH nor shipped by imageio-ffmpeg."""


class MediaError(MmaffectError):
    """A media file that cannot be read: empty, truncated, not media, or an unsupported codec."""


class NoVideoStream(MediaError):
    """The file has no video stream where one is needed."""


class StageStalled(MmaffectError):
    """A stage made no progress for too long; its input was given up (the batch goes on)."""


class InputError(MmaffectError):
    """An input path or option that makes no sense (missing path, no media found, bad id)."""


class TrainingDiverged(MmaffectError):
    """The training loss became NaN or infinite; the run stopped (earlier epochs' checkpoints
    are kept)."""


class ModelNotFound(MmaffectError):
    """A named pretrained model could not be resolved from any location."""


class ChecksumMismatch(MmaffectError):
    """A model file whose sha256 differs from the registered one."""


class AnnotationError(MmaffectError):
    """A label or annotation file that does not follow its ABAW layout.

    The message names the file and, where there is one, the 1-based line number, and says what
    was expected there; ``path`` and ``line`` carry the same for code that wants them.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        path: str | None = None,
        line: int | None = None,
    ):
        self.path = path
        self.line = line
        super().__init__(message, hint=hint)


class InvalidSubmission(InputError):
    """A prediction that is not a valid submission; ``problems`` holds what validate found."""

    def __init__(self, message: str, *, hint: str | None = None, problems: list | None = None):
        self.problems = list(problems or [])
        super().__init__(message, hint=hint)
