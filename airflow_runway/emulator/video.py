"""The emulator's output video: a real, playable MP4 rendered locally with PyAV, optionally padded.

Padding appends one top-level ``free`` box (ISO/IEC 14496-12 section 8.1.2), which every MP4 reader skips, so a
padded file of any size is still the same playable video. The padding is streamed, never held in memory.
"""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Iterator
from fractions import Fraction

WIDTH = 320
HEIGHT = 180
FPS = 24
SECONDS = 3
#: Largest box size a 32-bit ``size`` field holds; beyond it the box uses the 64-bit ``largesize`` form.
MAX_32BIT_BOX = 0xFFFFFFFF
CHUNK_SIZE = 1 << 20

_ZEROS = bytes(CHUNK_SIZE)
_lock = threading.Lock()
_cached: bytes | None = None


def pick_codec() -> str:
    """``libx264`` when this PyAV build has it, else FFmpeg's native ``mpeg4``."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _fill_plane(plane: object, rows: Iterator[bytes], width: int) -> None:
    # Each row is padded to the plane's stride (line_size), which FFmpeg may align beyond the visible width.
    line_size: int = plane.line_size  # type: ignore[attr-defined]
    height = plane.buffer_size // line_size  # type: ignore[attr-defined]
    padding = bytes(line_size - width)
    data = bytearray()
    for _ in range(height):
        data += next(rows)
        data += padding
    plane.update(bytes(data))  # type: ignore[attr-defined]


def _luma_rows(ramp: bytes, width: int, height: int, shift: int, left: int, top: int, square: int) -> Iterator[bytes]:
    for y in range(height):
        row = bytearray(ramp[y + shift : y + shift + width])
        if top <= y < top + square:
            row[left : left + square] = b"\xeb" * square
        yield bytes(row)
    while True:  # rows of alignment padding below the picture, if the plane has any
        yield bytes(width)


def _constant_rows(value: int, width: int) -> Iterator[bytes]:
    row = bytes([value]) * width
    while True:
        yield row


def render_mp4(width: int = WIDTH, height: int = HEIGHT, fps: int = FPS, seconds: int = SECONDS) -> bytes:
    """Render a short H.264 (or MPEG-4 Part 2) yuv420p MP4 of a moving synthetic pattern.

    The pattern is a diagonal luma ramp scrolling one way with a bright square crossing the frame, and the
    chroma slowly cycling, so consecutive frames differ and a decoder has real work to do.
    """
    import av

    ramp = bytes((x * 3) & 0xFF for x in range(width + height + 4 * fps * seconds + 256))
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        codec = pick_codec()
        stream = container.add_stream(codec, rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "30"}
        else:
            stream.bit_rate = 400_000
        square = height // 3
        for index in range(fps * seconds):
            frame = av.VideoFrame(width, height, "yuv420p")
            shift = 4 * index
            left = (index * (width - square)) // (fps * seconds - 1)
            top = (height - square) // 2

            _fill_plane(frame.planes[0], _luma_rows(ramp, width, height, shift, left, top, square), width)
            chroma_width = width // 2
            u_value = 128 + (index * 2) % 64 - 32
            v_value = 128 - (index * 3) % 64 + 32
            _fill_plane(frame.planes[1], _constant_rows(u_value, chroma_width), chroma_width)
            _fill_plane(frame.planes[2], _constant_rows(v_value, chroma_width), chroma_width)
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def sample_mp4() -> bytes:
    """The sample video, rendered on first use and then cached for the life of the process."""
    global _cached
    with _lock:
        if _cached is None:
            _cached = render_mp4()
        return _cached


def free_box_header(box_size: int) -> bytes:
    """The header of a ``free`` box ``box_size`` bytes long, header included.

    :raises ValueError: when no ``free`` box can be exactly that size (fewer than 8 bytes, or a size that needs
        the 16-byte 64-bit header but is smaller than 16).
    """
    if box_size < 8:
        raise ValueError(f"a free box is at least 8 bytes, not {box_size}")
    if box_size <= MAX_32BIT_BOX:
        return struct.pack(">I4s", box_size, b"free")
    return struct.pack(">I4sQ", 1, b"free", box_size)


def padded_size(video_size: int, output_size: int | None) -> int:
    """The size actually served: ``output_size`` when the video can be padded to it, else the bare video."""
    if output_size is None or output_size == video_size or output_size < video_size + 8:
        return video_size
    return output_size


def iter_body(video: bytes, total_size: int, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Yield bytes ``start`` to ``end`` (exclusive) of ``video`` padded to ``total_size``, in chunks of 1 MiB.

    ``total_size`` must come from :func:`padded_size`. Memory use is constant whatever the size.
    """
    end = total_size if end is None else min(end, total_size)
    position = start
    if position < len(video) and position < end:
        stop = min(len(video), end)
        view = memoryview(video)
        while position < stop:
            chunk_end = min(stop, position + CHUNK_SIZE)
            yield bytes(view[position:chunk_end])
            position = chunk_end
    if total_size == len(video) or position >= end:
        return
    header = free_box_header(total_size - len(video))
    header_end = len(video) + len(header)
    if position < header_end:
        stop = min(header_end, end)
        yield header[position - len(video) : stop - len(video)]
        position = stop
    while position < end:
        size = min(CHUNK_SIZE, end - position)
        yield _ZEROS if size == CHUNK_SIZE else _ZEROS[:size]
        position += size
