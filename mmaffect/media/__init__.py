"""Media ingest: probing, frames streamed from ffmpeg, 16 kHz mono audio, image sets, input
discovery."""

from mmaffect.media.audio import SAMPLE_RATE, AudioTrack, NoAudio, iter_audio, load_audio
from mmaffect.media.frame_folder import iter_frame_folder, probe_frame_folder
from mmaffect.media.frames import FrameChunk, iter_frames
from mmaffect.media.image_set import ImageSetInfo, iter_image_set, probe_image_set
from mmaffect.media.inputs import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    MediaSource,
    discover,
)
from mmaffect.media.probe import AudioStreamInfo, MediaInfo, VideoStreamInfo, probe
from mmaffect.media.source import open_source

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "SAMPLE_RATE",
    "VIDEO_EXTENSIONS",
    "AudioStreamInfo",
    "AudioTrack",
    "FrameChunk",
    "ImageSetInfo",
    "MediaInfo",
    "MediaSource",
    "NoAudio",
    "VideoStreamInfo",
    "discover",
    "iter_audio",
    "iter_frame_folder",
    "iter_frames",
    "iter_image_set",
    "load_audio",
    "open_source",
    "probe",
    "probe_frame_folder",
    "probe_image_set",
]
