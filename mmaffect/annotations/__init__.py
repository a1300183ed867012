"""ABAW / Aff-Wild2 annotations: label spaces, per-video label files, MTL split files, corpora.

Every layout of every edition is read by content, not by folder name: the header line says
which track and label space a per-video file holds (:func:`match_header`). Values come back as
numpy arrays with a mask that is False at the organisers' "unannotated" sentinels. Errors are
:class:`~mmaffect.errors.AnnotationError` with ``<file>, line <n>: <what was expected>``.
See ``docs/annotations.md``.
"""

from mmaffect.annotations.corpora import (
    EMODB_EMOTIONS,
    EMODB_TO_EXPR,
    RAVDESS_EMOTIONS,
    RAVDESS_TO_EXPR,
    emodb_label,
    ravdess_label,
)
from mmaffect.annotations.folders import (
    SPLIT_FOLDER_NAMES,
    find_split_folders,
    find_track_folders,
    read_label_folder,
    read_split_folders,
)
from mmaffect.annotations.mtl import (
    MTL_FILE_NAMES,
    MtlLabels,
    find_mtl_files,
    mtl_from_tracks,
    read_mtl_file,
)
from mmaffect.annotations.spaces import (
    AU_8,
    AU_12,
    EXPR_7,
    EXPR_8,
    LABEL_SPACES,
    MTL_HEADER,
    TRACKS,
    VA,
    LabelSpace,
    Track,
    label_space_for,
    match_header,
)
from mmaffect.annotations.video_labels import (
    VideoLabels,
    format_video_labels,
    read_video_labels,
    write_video_labels,
)
from mmaffect.errors import AnnotationError

__all__ = [
    "AU_8",
    "AU_12",
    "EMODB_EMOTIONS",
    "EMODB_TO_EXPR",
    "EXPR_7",
    "EXPR_8",
    "LABEL_SPACES",
    "MTL_FILE_NAMES",
    "MTL_HEADER",
    "RAVDESS_EMOTIONS",
    "RAVDESS_TO_EXPR",
    "SPLIT_FOLDER_NAMES",
    "TRACKS",
    "VA",
    "AnnotationError",
    "LabelSpace",
    "MtlLabels",
    "Track",
    "VideoLabels",
    "emodb_label",
    "find_mtl_files",
    "find_split_folders",
    "find_track_folders",
    "format_video_labels",
    "label_space_for",
    "match_header",
    "mtl_from_tracks",
    "ravdess_label",
    "read_label_folder",
    "read_mtl_file",
    "read_split_folders",
    "read_video_labels",
    "write_video_labels",
]
