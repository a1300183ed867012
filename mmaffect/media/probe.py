"""What a media file holds: container, streams, exact frame rate and exact frame count.

Container metadata is read with PyAV (no ffprobe is needed: the imageio-ffmpeg wheel ships
ffmpeg only). The frame count is the number of frames the decoder produces, which is what
every per-frame output of mmaffect is aligned to. Rule (``count``):

* ``"auto"`` (default): demux the video packets (fast, no decoding). When the container lists
  a frame count, the packets agree with it and none of them is discarded by an edit list, that
  number is exact. Otherwise (no count listed: MPEG-PS, many MKV/WebM; packets that disagree;
  an edit list that discards packets) the frames are counted by decoding.
* ``"decode"``: always count by decoding (what ``ffprobe -count_frames`` does).
* ``"header"``: trust the container's number when there is one (fast, may be wrong).

Damage rule (:func:`is_damaged`): fewer decoded frames than the container lists is not damage by
itself: an edit list discards packets (stream-copy cuts, phones, editors), and priming frames
decode to nothing. A video is truncated or damaged when frames are missing and either ffmpeg
reported decoder errors, or decoding stopped more than two frames before the stream's duration.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

from mmaffect.errors import MediaError, NoVideoStream
from mmaffect.media import ffmpeg

CountRule = Literal["auto", "decode", "header"]

# Tolerance (frames) between the container's count and what decodes before looking for damage:
# some encoders list one frame more than they write.
_TRUNCATION_SLACK = 1
# How far (frames) decoding may stop before the stream's duration without the file being
# truncated: an edit list may cut the last frame short.
_END_SLACK_FRAMES = 2


@dataclass(frozen=True)
class VideoStreamInfo:
    """The first video stream of a file, or an organiser frame folder."""

    index: int
    codec: str
    width: int  # as displayed, i.e. after the rotation ffmpeg applies (what frames come out as)
    height: int
    rotation: int  # display rotation in degrees from the container (0 when none)
    fps: Fraction  # average frame rate; frame i is at start_time + i / fps
    nominal_fps: Fraction  # the stream's declared (r_frame_rate-like) rate
    frames: int  # exact number of frames the decoder yields (see frame_count_method)
    frames_header: int | None  # what the container says, None when it says nothing
    frame_count_method: str  # "header" | "packets" | "decoded" | "files"
    duration: float | None  # seconds
    start_time: float  # seconds, of the first frame
    pix_fmt: str | None
    vfr: bool  # average and declared rates differ by more than 1 %


@dataclass(frozen=True)
class AudioStreamInfo:
    index: int
    codec: str
    sample_rate: int
    channels: int
    duration: float | None
    language: str | None = None


@dataclass(frozen=True)
class MediaInfo:
    """Probe result of one input (video file, audio file or organiser frame folder)."""

    path: Path
    kind: str  # "video" | "audio" | "frames"
    container: str
    size_bytes: int
    duration: float | None
    video: VideoStreamInfo | None = None
    audio: tuple[AudioStreamInfo, ...] = field(default_factory=tuple)

    @property
    def has_audio(self) -> bool:
        return bool(self.audio)

    def require_video(self) -> VideoStreamInfo:
        if self.video is None:
            raise NoVideoStream(f"{self.path.name} has no video stream")
        return self.video

    def to_dict(self) -> dict:
        def convert(obj):
            if isinstance(obj, Fraction):
                return {"num": obj.numerator, "den": obj.denominator, "value": float(obj)}
            if isinstance(obj, Path):
                return str(obj)
            if isinstance(obj, dict):
                return {k: convert(v) for k, v in obj.items()}
            if isinstance(obj, (list, tuple)):
                return [convert(v) for v in obj]
            return obj

        d = convert(dataclasses.asdict(self))
        d["has_audio"] = self.has_audio
        return d


def _seconds(value, time_base) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _open(path: Path):
    import av

    if not path.exists():
        raise MediaError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise MediaError(
            f"{path.name} is an empty file (0 bytes)", hint="copy or download it again"
        )
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError as e:
        raise MediaError(
            f"{path.name} is not a readable media file (ffmpeg: Invalid data found when "
            "processing input)",
            hint="check that it is a video or audio file and not damaged",
        ) from e
    except av.error.FFmpegError as e:
        raise MediaError(f"{path.name} cannot be opened: {e.strerror or e}") from e


_PROGRESS = re.compile(r"\w+=.*")  # a `-progress` key=value line (values may hold spaces)


@dataclass(frozen=True)
class DecodeCount:
    """What decoding the first video stream with ffmpeg found."""

    frames: int
    until: float | None  # seconds decoded from the first frame (ffmpeg's out_time)
    errors: str  # what ffmpeg printed at ``-loglevel error`` ("" for a clean decode)


def decode_count(path: Path, stream_index: int = 0) -> DecodeCount:
    """Decode the first video stream with ffmpeg (passthrough, no RGB) and count its frames."""
    stderr = ffmpeg.run(
        [
            "-loglevel",
            "error",
            "-nostats",
            "-progress",
            "pipe:2",
            "-i",
            str(path),
            "-map",
            f"0:v:{stream_index}",
            "-fps_mode",
            "passthrough",
            "-f",
            "null",
            "-",
        ],
        media=path,
    )
    counts = re.findall(r"^frame=\s*(\d+)", stderr, flags=re.MULTILINE)
    if not counts:
        raise MediaError(f"cannot count the frames of {path.name}", detail=stderr)
    until = re.findall(r"^out_time_us=(\d+)$", stderr, flags=re.MULTILINE)
    errors = [ln for ln in stderr.splitlines() if ln.strip() and not _PROGRESS.fullmatch(ln)]
    return DecodeCount(
        frames=int(counts[-1]),
        until=int(until[-1]) / 1_000_000 if until else None,
        errors="\n".join(errors),
    )


def count_frames_decoded(path: Path, stream_index: int = 0) -> int:
    """Count frames by decoding the first video stream with ffmpeg (passthrough, no RGB)."""
    return decode_count(path, stream_index).frames


def is_damaged(
    decoded: int,
    listed: int | None,
    *,
    errors: str,
    until: float | None,
    duration: float | None,
    fps: float,
) -> bool:
    """The damage rule (module docstring): are ``decoded`` frames of ``listed`` a damaged file?

    ``errors`` is what ffmpeg printed at ``-loglevel error`` while decoding, ``until`` how many
    seconds it decoded, ``duration`` the stream's duration in seconds.
    """
    if not listed or decoded >= listed - _TRUNCATION_SLACK:
        return False
    if errors.strip() or until is None or not duration:
        return True
    return duration - until > _END_SLACK_FRAMES / fps


def _count_decoded_or_damaged(path: Path) -> DecodeCount:
    try:
        return decode_count(path)
    except MediaError as e:
        raise MediaError(
            f"{path.name}: no video frame could be decoded (truncated or damaged file)",
            hint="check the file plays, or copy it again",
            detail=e.detail,
        ) from e


def _first_frame_rotation(container, stream) -> int:
    """Display rotation (degrees) read off the first decoded frame; 0 if none decodes."""
    import av

    try:
        for frame in container.decode(stream):
            rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
            break
        else:
            rotation = 0
    except av.error.FFmpegError:
        rotation = 0  # damaged files are reported by the frame count below
    container.seek(0)
    return rotation


def _count_packets(container, stream) -> tuple[int, int]:
    """(packets, packets an edit list discards) of a stream, demuxed without decoding."""
    n = discarded = 0
    for packet in container.demux(stream):
        if packet.size:  # the demuxer ends with an empty flush packet
            n += 1
            discarded += bool(packet.is_discard)
    return n, discarded


def _codec_tag(path: Path) -> str:
    """The fourcc ffmpeg prints for an undecodable video stream (PyAV does not expose it)."""
    import subprocess

    proc = subprocess.run(
        [ffmpeg.ffmpeg_binary(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
    )
    m = re.search(r"Video: \S+ \(([^ /)]+)", proc.stderr)
    return m.group(1) if m else "unknown"


def _unsupported_codec(path: Path) -> MediaError:
    return MediaError(
        f"{path.name} uses a video codec this ffmpeg cannot decode (codec tag {_codec_tag(path)})",
        hint="transcode it, e.g. `ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4`",
    )


def probe(path: str | Path, *, count: CountRule = "auto") -> MediaInfo:
    """Probe a video or audio file.

    Parameters
    ----------
    path
        A media file (frame folders: :func:`~mmaffect.media.probe_frame_folder`).
    count
        Frame-count rule, see the module docstring.

    Raises
    ------
    MediaError
        Empty, unreadable, truncated or undecodable files, with a one-line reason.
    """
    path = Path(path)
    container = _open(path)
    try:
        audio = tuple(
            AudioStreamInfo(
                index=s.index,
                codec=s.codec_context.name if s.codec_context else "none",
                sample_rate=int(s.sample_rate or 0),
                channels=int(s.channels or 0),
                duration=_seconds(s.duration, s.time_base),
                language=s.language,
            )
            for s in container.streams.audio
        )
        duration = container.duration / 1_000_000 if container.duration else None
        video = None
        # Cover art in audio files is an attached picture, not a video.
        vstreams = [s for s in container.streams.video if not _attached_pic(s)]
        if vstreams:
            video = _video_info(path, container, vstreams[0], count, duration)
        elif not audio:
            raise MediaError(f"{path.name} has neither a video nor an audio stream")
        return MediaInfo(
            path=path,
            kind="video" if video else "audio",
            container=container.format.name,
            size_bytes=path.stat().st_size,
            duration=duration,
            video=video,
            audio=audio,
        )
    finally:
        container.close()


def _attached_pic(stream) -> bool:
    disposition = stream.disposition
    return bool(disposition & type(disposition).attached_pic)


def _frame_count(path, container, s, count: CountRule, header, duration, rate) -> tuple[int, str]:
    """(frames, frame_count_method) by the count rule; raises for a damaged file."""
    if count == "header" and header:
        return header, "header"
    if count == "auto":
        packets, discarded = _count_packets(container, s)
        if header and packets == header and not discarded:
            return header, "packets"
    decoded = _count_decoded_or_damaged(path)
    if decoded.frames == 0:
        raise MediaError(
            f"{path.name}: no video frame could be decoded (truncated or damaged file)",
            hint="check the file plays, or copy it again",
        )
    rate = s.average_rate or rate
    fps = float(rate) if rate else decoded.frames / (duration or 1.0)
    damaged = is_damaged(
        decoded.frames,
        header,
        errors=decoded.errors,
        until=decoded.until,
        duration=duration,
        fps=fps,
    )
    if damaged:
        raise MediaError(
            f"{path.name} is truncated or damaged: only {decoded.frames} of the {header} frames "
            "its container lists can be decoded",
            hint="copy or download it again",
            detail=decoded.errors or None,
        )
    return decoded.frames, "decoded"


def _video_info(path, container, s, count: CountRule, container_duration) -> VideoStreamInfo:
    codec = s.codec_context.name if s.codec_context else None
    if not codec or codec == "none":
        raise _unsupported_codec(path)
    nominal = s.guessed_rate or s.base_rate or s.average_rate
    duration = _seconds(s.duration, s.time_base) or container_duration
    header = int(s.frames) if s.frames else None
    start = _seconds(s.start_time, s.time_base) or 0.0
    rotation = _first_frame_rotation(container, s)

    frames, method = _frame_count(path, container, s, count, header, duration, nominal)

    # The average rate is frames / duration; fall back on the declared rate when absent.
    avg = s.average_rate or nominal
    if avg is None:
        if not duration:
            raise MediaError(f"{path.name}: the video has neither a frame rate nor a duration")
        avg = Fraction(frames) / Fraction(duration).limit_denominator(1_000_000)
    fps = Fraction(avg)
    nominal = Fraction(nominal) if nominal else fps
    width, height = int(s.codec_context.width), int(s.codec_context.height)
    if rotation % 180:
        width, height = height, width
    return VideoStreamInfo(
        index=s.index,
        codec=codec,
        width=width,
        height=height,
        rotation=rotation,
        fps=fps,
        nominal_fps=nominal,
        frames=frames,
        frames_header=header,
        frame_count_method=method,
        duration=duration,
        start_time=start,
        pix_fmt=s.codec_context.pix_fmt,
        vfr=abs(float(fps) - float(nominal)) > 0.01 * float(nominal),
    )


def opencv_frame_count(path: str | Path) -> int:
    """The frame count OpenCV reports (``CAP_PROP_FRAME_COUNT``), as ABAW3 participants read it.

    Their submissions had this count + 1 lines per video (the ``opencv+1`` frame-count rule of
    ``mmaffect predict``). OpenCV takes it from the container or estimates it from the
    duration, so it can differ from the frames a decoder yields (:attr:`VideoStreamInfo.frames`).

    Raises
    ------
    MediaError
        OpenCV cannot open the file.
    """
    import cv2

    path = Path(path)
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MediaError(f"{path}: OpenCV cannot open this file")
        return max(0, int(round(cap.get(cv2.CAP_PROP_FRAME_COUNT))))
    finally:
        cap.release()
