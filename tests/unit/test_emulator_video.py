"""The emulator's output video: a real MP4, and the ``free`` box padding that keeps it one at any size."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import av
import pytest

from airflow_runway.emulator.video import (
    CHUNK_SIZE,
    HEIGHT,
    MAX_32BIT_BOX,
    WIDTH,
    free_box_header,
    iter_body,
    padded_size,
    pick_codec,
    sample_mp4,
)


def top_level_boxes(data: bytes) -> list[tuple[str, int]]:
    """``(type, size)`` of each top-level ISO-BMFF box; fails unless the boxes tile the data exactly."""
    boxes, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            (size,) = struct.unpack(">Q", data[offset + 8 : offset + 16])
        assert size >= 8, f"bad box size {size} at {offset}"
        boxes.append((kind.decode("latin-1"), size))
        offset += size
    assert offset == len(data), "boxes overrun the data"
    return boxes


def decode_frames(source: str | io.BytesIO) -> int:
    with av.open(source) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (WIDTH, HEIGHT)
        frames = list(container.decode(stream))
    assert frames and frames[0].format.name == "yuv420p"
    return len(frames)


def test_sample_is_a_small_playable_mp4_of_a_moving_pattern():
    video = sample_mp4()
    assert video is sample_mp4()  # rendered once per process
    assert len(video) < 1_000_000
    kinds = [kind for kind, _ in top_level_boxes(video)]
    assert kinds[0] == "ftyp" and "moov" in kinds and "mdat" in kinds
    with av.open(io.BytesIO(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == ("h264" if pick_codec() == "libx264" else "mpeg4")
        frames = list(container.decode(stream))
    assert len(frames) >= 24
    first, last = (bytes(frame.planes[0]) for frame in (frames[0], frames[-1]))
    assert first != last, "the pattern should move"


def test_free_box_header_uses_32_bit_size_then_largesize():
    assert free_box_header(8) == b"\x00\x00\x00\x08free"
    assert free_box_header(MAX_32BIT_BOX) == b"\xff\xff\xff\xfffree"
    big = MAX_32BIT_BOX + 1
    assert free_box_header(big) == b"\x00\x00\x00\x01free" + big.to_bytes(8, "big")
    with pytest.raises(ValueError):
        free_box_header(7)


@pytest.mark.parametrize(
    ("requested", "served"),
    [(None, 100), (100, 100), (101, 100), (107, 100), (108, 108), (10**9, 10**9), (50, 100)],
)
def test_padded_size_pads_only_when_a_free_box_fits(requested, served):
    assert padded_size(100, requested) == served


def test_padding_is_one_free_box_of_zeros_and_ranges_slice_it():
    video = b"V" * 100
    whole = b"".join(iter_body(video, 120))
    assert whole == video + b"\x00\x00\x00\x14free" + bytes(12)
    for start, end in [(0, 50), (95, 110), (100, 104), (103, 120), (119, 120), (50, 200)]:
        assert b"".join(iter_body(video, 120, start, end)) == whole[start:end]
    assert b"".join(iter_body(video, 100)) == video


def test_large_padding_streams_in_bounded_chunks_with_a_64_bit_box():
    video = b"V" * 10
    total = MAX_32BIT_BOX + 1000
    chunks = iter_body(video, total, start=0, end=10 + 16 + 3 * CHUNK_SIZE)
    sizes = [len(chunk) for chunk in chunks]
    assert max(sizes) <= CHUNK_SIZE
    assert sum(sizes) == 10 + 16 + 3 * CHUNK_SIZE
    header = b"".join(iter_body(video, total, 10, 26))
    assert header == struct.pack(">I4sQ", 1, b"free", total - 10)


def test_padded_mp4_keeps_its_box_layout_and_still_decodes(tmp_path: Path):
    video = sample_mp4()
    total = len(video) + 3 * CHUNK_SIZE + 123
    path = tmp_path / "padded.mp4"
    with path.open("wb") as out:
        for chunk in iter_body(video, total):
            out.write(chunk)
    data = path.read_bytes()
    assert len(data) == total
    boxes = top_level_boxes(data)
    assert boxes[-1] == ("free", total - len(video))
    assert boxes[:-1] == top_level_boxes(video)
    assert decode_frames(str(path)) == decode_frames(io.BytesIO(video))
