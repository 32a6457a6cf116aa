"""Stitching engine: ``stitch(parts, output_path, options) -> Result``.

Plans a frame-level MP3 join when the parts allow it, otherwise one streaming ffmpeg pass.
"""
from .types import PartInput, PartSpan, Result  # noqa: F401


def stitch(parts, output_path, options, progress=None):  # replaced by the engine implementation
    raise NotImplementedError("engine not built yet")
