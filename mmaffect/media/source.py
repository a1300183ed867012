"""One interface over the kinds of source: video file, audio file, frame folder, image set."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mmaffect.media.audio import AudioTrack, NoAudio, load_audio
from mmaffect.media.ffmpeg import ChildProcesses
from mmaffect.media.frame_folder import iter_frame_folder, probe_frame_folder
from mmaffect.media.frames import FrameChunk, VfrRule, iter_frames
from mmaffect.media.image_set import iter_image_set, probe_image_set
from mmaffect.media.inputs import MediaSource
from mmaffect.media.probe import CountRule, MediaInfo, probe
from mmaffect.media.soundtrack import Soundtrack, open_soundtrack


@dataclass(frozen=True)
class OpenedSource:
    """A probed source: its metadata, a frame stream and its soundtrack."""

    source: MediaSource
    info: MediaInfo

    @property
    def frame_count(self) -> int:
        return self.info.require_video().frames

    def frames(
        self,
        *,
        chunk_size: int = 32,
        resize: int | tuple[int, int] | None = None,
        every: int = 1,
        vfr: VfrRule = "passthrough",
        children: ChildProcesses | None = None,
    ) -> Iterator[FrameChunk]:
        """Frame chunks; ``children`` registers the decoding ffmpeg (video files)."""
        if self.source.kind == "images":
            return iter_image_set(self.info, chunk_size=chunk_size, resize=resize, every=every)
        if self.source.kind == "frames":
            return iter_frame_folder(
                self.source.path, chunk_size=chunk_size, resize=resize, every=every, info=self.info
            )
        return iter_frames(
            self.source.path,
            chunk_size=chunk_size,
            resize=resize,
            every=every,
            vfr=vfr,
            info=self.info,
            children=children,
        )

    def audio(self) -> AudioTrack | NoAudio:
        """The soundtrack (of the base video for ``_left``/``_right`` frame folders)."""
        missing = self._no_audio_file()
        if missing is not None:
            return missing
        if self.source.audio_path == self.source.path:
            return load_audio(self.source.path, info=self.info)
        return load_audio(self.source.audio_path)

    def soundtrack(self, *, piece_seconds: float | None = None) -> Soundtrack | NoAudio:
        """The same soundtrack as :meth:`audio`, read piece by piece
        (:mod:`mmaffect.media.soundtrack`); nothing is decoded yet."""
        missing = self._no_audio_file()
        if missing is not None:
            return missing
        info = self.info if self.source.audio_path == self.source.path else None
        return open_soundtrack(self.source.audio_path, info=info, piece_seconds=piece_seconds)

    def _no_audio_file(self) -> NoAudio | None:
        if self.source.kind == "images":
            return NoAudio(source=self.source.path, reason="photos have no soundtrack")
        if self.source.audio_path is None:
            return NoAudio(
                source=self.source.path,
                reason=f"no video or audio file named {self.source.base_id} was given for this "
                "frame folder (pass it among the inputs or with --audio-dir)",
            )
        return None


def open_source(source: MediaSource, *, count: CountRule = "auto") -> OpenedSource:
    """Probe a :class:`MediaSource` (raises :class:`~mmaffect.errors.MediaError` if unreadable;
    an image set leaves its unreadable images out, :mod:`mmaffect.media.image_set`)."""
    if source.kind == "images":
        return OpenedSource(source=source, info=probe_image_set(source, count))
    if source.kind == "frames":
        info = probe_frame_folder(source.path, fps=source.fps)
    else:
        info = probe(source.path, count=count)
    return OpenedSource(source=source, info=info)
