"""Challenge submissions: write them from predictions, validate them, score them.

* :mod:`~mmaffect.submission.writers` — one writer per format (per-video files of ABAW1-3, the
  template-driven file of ABAW5/6/8, the MTL file of ABAW3/4/7, the plain per-frame table),
  chosen with :func:`writer_for`; readers of what they write.
* :mod:`~mmaffect.submission.validate` — :func:`validate_submission` lists every problem of a
  submission before it is uploaded.
* :mod:`~mmaffect.submission.evaluate` — :func:`evaluate` scores a submission-format file against
  ground truth with the edition's official formula.

See ``docs/submission.md``.
"""

from __future__ import annotations

from mmaffect.submission.evaluate import EvaluationReport, evaluate
from mmaffect.submission.validate import FRAME_COUNT_CHOICES, Problem, validate_submission
from mmaffect.submission.writers import (
    WRITERS,
    MtlWriter,
    PerVideoWriter,
    TableWriter,
    TemplateSubmission,
    TemplateWriter,
    edition_number,
    get_writer,
    read_image_rows,
    read_table,
    read_template_submission,
    template_track,
    writer_for,
)

__all__ = [
    "FRAME_COUNT_CHOICES",
    "WRITERS",
    "EvaluationReport",
    "MtlWriter",
    "PerVideoWriter",
    "Problem",
    "TableWriter",
    "TemplateSubmission",
    "TemplateWriter",
    "edition_number",
    "evaluate",
    "get_writer",
    "read_image_rows",
    "read_table",
    "read_template_submission",
    "template_track",
    "validate_submission",
    "writer_for",
]
