"""Multimodal affect models over per-frame features (training code; imports torch).

Registered models (:func:`create_model`, :func:`available_models`):

* ``fusion`` (default): the ABAW3 transformer-based multimodal information fusion model;
* ``affine_transformer``: the ABAW7 affine module + Transformer encoder;
* ``temporal_ensemble``: the ABAW2 frame / GRU / Transformer weighted-sum ensemble;
* ``ensemble``: trained checkpoints combined by a weighted sum of their outputs (image models,
  or models over cached features), written by ``mmaffect ensemble``
  (:mod:`mmaffect.models.ensemble`);
* image models, trained end to end on face crops (``batch["image"]``, uint8 ``(B, H, W, 3)``),
  all built on :class:`~mmaffect.models.face_cnn.FaceImageModel`:

  * ``face_cnn``: a face backbone and task heads (:mod:`mmaffect.models.face_cnn`);
  * ``dan``: seed 003's multi-head cross attention network (:mod:`mmaffect.models.dan`);
  * ``hybrid_cnn_transformer``: seed 000's CNN + Transformer encoder over the CNN's feature
    map (:mod:`mmaffect.models.hybrid`).

Inputs contract
---------------
``model(batch)`` takes a dict holding, for each enabled modality ``m`` among ``frame``,
``clip``, ``speech``, ``word`` (``model.modalities``):

* ``batch[m]``: float tensor ``(B, T, D_m)``, the per-frame features (``docs/extract.md``;
  default widths frame 1280, clip 190, speech 85, word 385, configurable with ``dims``) of a
  window of ``T`` frames centred on the frame to predict. ``T`` may be odd or even; the
  predicted ("middle") frame is index ``T // 2``. All enabled modalities share ``B`` and ``T``.
* ``batch["mask_" + m]``: bool ``(B, T)``, False where the frame has no valid feature (e.g. no
  face). Optional (absent = all valid). Features at masked frames are ignored (zeroed on entry,
  so NaN there is harmless).

Other keys are ignored. Output: a dict with, for each configured task (``model.tasks``),
``expr`` logits ``(B, n_expr)``, ``au`` logits ``(B, n_au)`` and ``va`` ``(B, 2)`` in [-1, 1]
(tanh); :func:`mmaffect.losses.mtl_loss` accepts it as is.

Every model has ``hparams`` (``create_model(name, **model.hparams)`` rebuilds the same
architecture) and ``modalities``. Any non-empty subset of the modalities builds, trains and
predicts; see ``docs/models_architectures.md``.
"""

from __future__ import annotations

from mmaffect.models.affine_transformer import AffineTransformerModel
from mmaffect.models.common import DEFAULT_DIMS, MODALITIES, TASKS, AffectModel, middle_index
from mmaffect.models.dan import DAN
from mmaffect.models.ensemble import EnsembleModel
from mmaffect.models.face_cnn import FaceCNN, FaceImageModel, image_models
from mmaffect.models.fusion import FusionModel
from mmaffect.models.hybrid import HybridCNNTransformer
from mmaffect.models.registry import available_models, create_model, model_class, register_model
from mmaffect.models.temporal_ensemble import TemporalEnsembleModel

DEFAULT_MODEL = "fusion"

__all__ = [
    "DEFAULT_DIMS",
    "DEFAULT_MODEL",
    "MODALITIES",
    "TASKS",
    "AffectModel",
    "DAN",
    "AffineTransformerModel",
    "EnsembleModel",
    "FaceCNN",
    "FaceImageModel",
    "FusionModel",
    "HybridCNNTransformer",
    "TemporalEnsembleModel",
    "available_models",
    "create_model",
    "image_models",
    "middle_index",
    "model_class",
    "register_model",
]
