"""A reader of TensorFlow-1 checkpoints (the tensor-bundle format), with no TensorFlow or protobuf dependency.

A checkpoint ``PREFIX`` is two files:

- ``PREFIX.index``: a LevelDB-style sorted table (SSTable). Its data blocks map each tensor name to a
  ``BundleEntryProto`` (dtype, shape, shard, byte offset, byte size, masked crc32c of the bytes); the empty key holds
  a ``BundleHeaderProto`` (number of shards, endianness). Every block ends with a compression byte and the masked
  crc32c of the block; the last 48 bytes are the footer (two block handles and the table magic number).
- ``PREFIX.data-00000-of-00001`` (one shard per ``num_shards``): the tensors' raw little-endian bytes.

:func:`read_checkpoint` checks every block's crc32c, every tensor's size against its dtype and shape, every
offset against its shard's length, and every tensor's crc32c, before it returns anything: a truncated or corrupt
checkpoint raises one :class:`CheckpointError` and nothing is half-loaded.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tagretrieval.runtime.errors import DataError

__all__ = ["CheckpointError", "crc32c", "read_checkpoint"]

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
BLOCK_TRAILER_BYTES = 5
# TensorFlow's DataType enum -> numpy dtype (the ones a checkpoint of weights holds)
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
          10: np.bool_, 14: np.uint16, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}
DT_STRING = 7


class CheckpointError(DataError):
    """A TF checkpoint is missing, truncated or corrupt; the message names the file and what is wrong."""


# ---- crc32c (Castagnoli), vectorised over chunks with numpy, combined by the linearity of the CRC ----

def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[n] = c
    return table


_TABLE = _crc_table()
_CHUNK_BYTES = 4096
_SHIFT_CACHE: dict[int, list[int]] = {}


def _raw_crc(state: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Run the CRC register ``state [n]`` (uint32) over ``data [n, length]`` (uint8), one column per step."""
    for j in range(data.shape[1]):
        state = _TABLE[(state ^ data[:, j]) & 0xFF] ^ (state >> np.uint32(8))
    return state


def _shift_columns(length: int) -> list[int]:
    """The linear map "run the register over ``length`` zero bytes", as the images of the 32 unit states."""
    if length not in _SHIFT_CACHE:
        basis = np.array([1 << bit for bit in range(32)], dtype=np.uint32)
        _SHIFT_CACHE[length] = [int(v) for v in _raw_crc(basis, np.zeros((32, length), dtype=np.uint8))]
    return _SHIFT_CACHE[length]


def crc32c(data: bytes | memoryview) -> int:
    """The crc32c (Castagnoli) of ``data``, as ``google-crc32c`` or TensorFlow compute it."""
    buf = np.frombuffer(data, dtype=np.uint8)
    n_chunks = len(buf) // _CHUNK_BYTES
    state = 0xFFFFFFFF
    if n_chunks:
        # register(s, A) = shift_len(A)(s) ^ register(0, A): each chunk from 0 in parallel, then folded in order
        parts = _raw_crc(np.zeros(n_chunks, dtype=np.uint32), buf[:n_chunks * _CHUNK_BYTES].reshape(n_chunks, -1))
        columns = _shift_columns(_CHUNK_BYTES)
        for part in parts.tolist():
            shifted = 0
            bit = 0
            while state:
                if state & 1:
                    shifted ^= columns[bit]
                state >>= 1
                bit += 1
            state = shifted ^ part
    tail = buf[n_chunks * _CHUNK_BYTES:]
    if len(tail):
        state = int(_raw_crc(np.array([state], dtype=np.uint32), tail[None, :])[0])
    return state ^ 0xFFFFFFFF


def _unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ---- protobuf wire format and the SSTable ----

def _varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError(f"bad varint in {what}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, what: str) -> list[tuple[int, int | bytes]]:
    """A protobuf message -> ``[(field number, int for varint/fixed, bytes for length-delimited)]``."""
    out = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, what)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, what)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ValueError(f"truncated fixed64 in {what}")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ValueError(f"truncated fixed32 in {what}")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, what)
            if pos + length > len(buf):
                raise ValueError(f"truncated field in {what}")
            value = bytes(buf[pos:pos + length])
            pos += length
        else:
            raise ValueError(f"unknown wire type {wire} in {what}")
        out.append((number, value))
    return out


def _block(index: bytes, offset: int, size: int) -> bytes:
    """The contents of the block at ``offset``, its crc checked (the trailer is a type byte and a masked crc)."""
    end = offset + size + BLOCK_TRAILER_BYTES
    if offset < 0 or end > len(index):
        raise ValueError(f"a block at bytes {offset}..{end} runs past the end ({len(index)} bytes)")
    contents = index[offset:offset + size + 1]  # the crc covers the contents and the type byte
    if index[offset + size] != 0:
        raise ValueError(f"a block is compressed (type {index[offset + size]}); only uncompressed tables are read")
    (masked,) = struct.unpack_from("<I", index, offset + size + 1)
    if crc32c(contents) != _unmask(masked):
        raise ValueError(f"the block at byte {offset} fails its crc32c")
    return index[offset:offset + size]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise ValueError("a block is shorter than its restart count")
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * n_restarts
    if limit < 0:
        raise ValueError("a block's restart array runs past its start")
    entries = []
    key = b""
    pos = 0
    while pos < limit:
        shared, pos = _varint(block, pos, "a block entry")
        unshared, pos = _varint(block, pos, "a block entry")
        value_length, pos = _varint(block, pos, "a block entry")
        if shared > len(key) or pos + unshared + value_length > limit:
            raise ValueError("a block entry runs past its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_length]))
        pos += value_length
    return entries


def _handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos, "a block handle")
    size, pos = _varint(buf, pos, "a block handle")
    return offset, size, pos


def _table(index: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of an uncompressed LevelDB table, in order."""
    if len(index) < FOOTER_BYTES:
        raise ValueError(f"{len(index)} bytes is shorter than the 48-byte footer")
    footer = index[-FOOTER_BYTES:]
    if struct.unpack_from("<Q", footer, 40)[0] != TABLE_MAGIC:
        raise ValueError("the footer's magic number is wrong (not a tensor-bundle index, or truncated)")
    _, _, pos = _handle(footer, 0)  # the metaindex block (empty in a bundle)
    index_offset, index_size, _ = _handle(footer, pos)
    entries = []
    for _, handle in _block_entries(_block(index, index_offset, index_size)):
        offset, size, _ = _handle(handle, 0)
        entries.extend(_block_entries(_block(index, offset, size)))
    return entries


def _entry(value: bytes, name: str) -> dict:
    what = f"the entry of {name!r}"
    entry = {"dtype": 0, "shape": [], "shard_id": 0, "offset": 0, "size": 0, "crc32c": None, "slices": False}
    for number, field in _fields(value, what):
        if number == 1:
            entry["dtype"] = field
        elif number == 2:
            for dim_number, dim in _fields(field, what):
                if dim_number == 2:
                    size = dict(_fields(dim, what)).get(1, 0)
                    entry["shape"].append(size - (1 << 64) if size >= 1 << 63 else size)
                elif dim_number == 3 and field:  # unknown_rank
                    raise ValueError(f"{what} has an unknown rank")
        elif number in (3, 4, 5):
            entry[{3: "shard_id", 4: "offset", 5: "size"}[number]] = field
        elif number == 6:
            entry["crc32c"] = field
        elif number == 7:
            entry["slices"] = True
    return entry


def read_checkpoint(prefix: str | Path, *, keep: Callable[[str], bool] | None = None) -> dict[str, np.ndarray]:
    """Every numeric tensor of the TF checkpoint ``prefix`` (``prefix.index`` + ``prefix.data-*``), by name.

    Args:
        prefix: the path the files share, e.g. ``.../MTT_musicnn/`` (musicnn's files are named ``.index`` and
            ``.data-00000-of-00001`` inside the folder, so a folder path ending in ``/`` is the prefix).
        keep: which tensor names to read (e.g. not the optimizer's slots); ``None`` reads all. The whole index
            is checked either way; only the kept tensors' bytes are checked and copied.

    Returns:
        ``{name: array}``: writable numpy arrays in their stored dtype and shape; string tensors are skipped.

    Raises:
        CheckpointError: a file is missing, truncated or corrupt (a crc, a size or an offset does not match).
    """
    prefix = str(prefix)
    index_path = Path(prefix + ".index")
    try:
        index = index_path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read TF checkpoint index {str(index_path)!r}: {error.strerror}") from error
    try:
        entries = _table(index)
    except ValueError as error:
        raise CheckpointError(f"TF checkpoint index {str(index_path)!r} is corrupt: {error}") from error
    header = {}
    tensors = {}
    try:
        for key, value in entries:
            if key == b"":
                header = dict(_fields(value, "the bundle header"))
            else:
                tensors[key.decode("utf-8")] = _entry(value, key.decode("utf-8", "replace"))
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"TF checkpoint index {str(index_path)!r} is corrupt: {error}") from error
    if header.get(2, 0) != 0:
        raise CheckpointError(f"TF checkpoint {prefix!r} is big-endian; only little-endian bundles are read")
    num_shards = header.get(1, 1)
    shards = {}
    for shard in range(num_shards):
        data_path = Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")
        try:
            shards[shard] = data_path.read_bytes()
        except OSError as error:
            raise CheckpointError(f"cannot read TF checkpoint data {str(data_path)!r}: {error.strerror}") from error
    out = {}
    for name, entry in tensors.items():
        if keep is not None and not keep(name):
            continue
        where = f"tensor {name!r} of TF checkpoint {prefix!r}"
        if entry["slices"]:
            raise CheckpointError(f"{where} is stored in slices, which this reader does not support")
        if entry["dtype"] == DT_STRING:
            continue
        if entry["dtype"] not in DTYPES:
            raise CheckpointError(f"{where} has unsupported dtype {entry['dtype']}")
        dtype = np.dtype(DTYPES[entry["dtype"]]).newbyteorder("<")
        shape = tuple(entry["shape"])
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if entry["size"] != expected or min(shape, default=0) < 0:
            raise CheckpointError(f"{where} claims {entry['size']} bytes for shape {shape} of {dtype} "
                                  f"({expected} bytes): the index is corrupt")
        data = shards.get(entry["shard_id"])
        if data is None:
            raise CheckpointError(f"{where} names shard {entry['shard_id']} of {num_shards}: the index is corrupt")
        start, stop = entry["offset"], entry["offset"] + entry["size"]
        if stop > len(data):
            raise CheckpointError(f"{where} lies at bytes {start}..{stop} but the data file has {len(data)} bytes: "
                                  "the checkpoint is truncated")
        raw = memoryview(data)[start:stop]
        if entry["crc32c"] is not None and crc32c(raw) != _unmask(entry["crc32c"]):
            raise CheckpointError(f"{where} fails its crc32c: the data file is corrupt")
        out[name] = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=True)
    return out
