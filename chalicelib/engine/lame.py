"""LAME in this process: the chunk encoder of the parallel MP3 path.

The library is the libmp3lame 3.100 that the ``lameenc`` wheel links statically and exports
(manylinux2014: glibc 2.17 or later, so it loads on both Lambda's Amazon Linux 2 and AL2023). It is driven through ctypes rather than
lameenc's own ``Encoder``: that one takes 16-bit PCM only and forces plain stereo above 128 kbps,
where ffmpeg (the single-pass encoder) uses joint stereo. Here every setting is ffmpeg's
libmp3lame wrapper's: CBR at the given bitrate, joint stereo (mono for one channel), the output at
the input's rate, LAME's default quality (3, what ffmpeg 7 leaves it at), the bit reservoir on and
no Xing/Info frame (the assembler writes the one for the whole stream). Input is interleaved
float32 in [-1, 1], as the decode graph writes it.

ctypes releases the GIL for the call, so one encoder per thread uses one core each, with no
process start, no PCM file and no pipe per chunk.
"""
from __future__ import annotations

import ctypes
import importlib.util
import threading

from ..errors import StitchError

_JOINT_STEREO, _MONO = 1, 3
_lib: ctypes.CDLL | None = None
_loaded = False
# LAME's set-up (lame_init_params) fills some process-wide lookup tables, with the same values
# every time, while other threads may be encoding with them: set-ups at least take turns.
_setup = threading.Lock()
_SYMBOLS = ("lame_init", "lame_set_num_channels", "lame_set_in_samplerate", "lame_set_out_samplerate",
            "lame_set_mode", "lame_set_brate", "lame_set_bWriteVbrTag", "lame_set_disable_reservoir",
            "lame_init_params", "lame_get_encoder_delay", "lame_get_framesize",
            "lame_encode_buffer_interleaved_ieee_float", "lame_encode_buffer_ieee_float",
            "lame_encode_flush", "lame_close")


_load = threading.Lock()


def library() -> ctypes.CDLL | None:
    """libmp3lame, or None when this environment has no usable one (then MP3 is single-pass).
    Loaded once; jobs starting together in threads wait for the one load."""
    global _lib, _loaded
    if _loaded:
        return _lib
    with _load:
        if not _loaded:
            _lib = _open()
            _loaded = True
    return _lib


def _open() -> ctypes.CDLL | None:
    try:
        spec = importlib.util.find_spec("lameenc")
        if spec is None or not spec.origin:
            return None
        lib = ctypes.CDLL(spec.origin)
        if not all(hasattr(lib, name) for name in _SYMBOLS):
            return None
    except (ImportError, OSError):
        return None
    lib.lame_init.restype = ctypes.c_void_p
    for name in _SYMBOLS[1:]:
        getattr(lib, name).argtypes = [ctypes.c_void_p] + ([ctypes.c_int] if name.startswith("lame_set") else [])
    f32p = ctypes.c_void_p
    lib.lame_encode_buffer_interleaved_ieee_float.argtypes = [ctypes.c_void_p, f32p, ctypes.c_int,
                                                              ctypes.c_void_p, ctypes.c_int]
    lib.lame_encode_buffer_ieee_float.argtypes = [ctypes.c_void_p, f32p, f32p, ctypes.c_int,
                                                  ctypes.c_void_p, ctypes.c_int]
    lib.lame_encode_flush.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return lib


def kbps(bitrate: str) -> int:
    """ "128k" -> 128 (the form options and the encode path give bitrates in)."""
    return int(bitrate[:-1]) if bitrate.endswith("k") else int(bitrate) // 1000


class Encoder:
    """One CBR MP3 stream. ``encode`` may be called many times; ``finish`` flushes and frees it."""

    _g = None  # LAME's handle, once it exists

    def __init__(self, rate: int, channels: int, bitrate: str):
        lib = library()
        if lib is None:
            raise StitchError("the mp3 encoder library is not available")
        self._lib, self.channels = lib, channels
        with _setup:
            g = lib.lame_init()
            if not g:
                raise StitchError("the mp3 encoder could not start")
            ok = (lib.lame_set_num_channels(g, channels) >= 0
                  and lib.lame_set_in_samplerate(g, rate) >= 0
                  and lib.lame_set_out_samplerate(g, rate) >= 0
                  and lib.lame_set_mode(g, _JOINT_STEREO if channels > 1 else _MONO) >= 0
                  and lib.lame_set_brate(g, kbps(bitrate)) >= 0
                  and lib.lame_set_bWriteVbrTag(g, 0) >= 0
                  and lib.lame_set_disable_reservoir(g, 0) >= 0
                  and lib.lame_init_params(g) >= 0)
            if not ok:
                lib.lame_close(g)
                raise StitchError(f"the mp3 encoder refused {channels} channels at {rate} Hz and {bitrate}")
        self._g = g
        self.delay = lib.lame_get_encoder_delay(g)  # samples before the first input sample
        self.frame_samples = lib.lame_get_framesize(g)

    def encode(self, pcm: bytearray | memoryview) -> bytes:
        """MP3 bytes for ``pcm`` (interleaved float32; may hold frames of earlier calls' input)."""
        view = memoryview(pcm).cast("B")
        n = len(view) // (4 * self.channels)
        if n == 0:
            return b""
        # LAME's own bound on what n samples can produce
        out = ctypes.create_string_buffer(n * 5 // 4 + 7200)
        if view.readonly:
            view = memoryview(bytearray(view))
        src = (ctypes.c_char * len(view)).from_buffer(view)  # no copy: LAME reads the caller's buffer
        got = self._lame_encode(ctypes.addressof(src), n, out)
        del src  # releases the caller's buffer
        if got < 0:
            raise StitchError(f"the mp3 encoder failed (LAME error {got})")
        return out.raw[:got]

    def _lame_encode(self, addr: int, n: int, out) -> int:
        """LAME's return: bytes written to ``out``, or a negative error code."""
        if self.channels == 2:
            return self._lib.lame_encode_buffer_interleaved_ieee_float(self._g, addr, n, out, len(out))
        return self._lib.lame_encode_buffer_ieee_float(self._g, addr, addr, n, out, len(out))

    def finish(self) -> bytes:
        """The frames still buffered (the last input samples and LAME's padding); frees the encoder."""
        try:
            out = ctypes.create_string_buffer(7200)
            got = self._lib.lame_encode_flush(self._g, out, len(out))
            if got < 0:
                raise StitchError(f"the mp3 encoder failed at the end (LAME error {got})")
            return out.raw[:got]
        finally:
            self.close()

    def close(self) -> None:
        if self._g:
            self._lib.lame_close(self._g)
            self._g = None

    def __del__(self):
        self.close()
