from mmaffect.features.timing import FrameTiming

__all__ = ["FrameTiming"]
