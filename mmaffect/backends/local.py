"""The local backend: the whole batch in this process (:class:`mmaffect.extraction._ExtractRun`:
the vision side of one video at a time in a watched thread, the audio sides beside it, the next
video decoding ahead)."""

from __future__ import annotations

import time


def run_extract(backend, *, store, options, sources, console, progress, debug, on_video):
    """Every video of ``sources`` in this process, with the progress bars of ``extract``."""
    from mmaffect.extraction import _ExtractRun, _Progress

    started = time.perf_counter()
    run = _ExtractRun(store, options, sources, console, debug, on_video)
    with _Progress(console, progress, len(run.sources), run.audio_side is not None) as bars:
        run.bars = bars
        run.run()
    return run.report(started)
