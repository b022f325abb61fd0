"""8-bit blockwise optimizer state (Dettmers et al. 2022), with bitsandbytes' names, layout and maps.

A state slot kept in 8 bits is one uint8 code per element and one float32
absmax per block of `block_size` elements (256) of the flattened param: an
element's value is ``qmap[code] * absmax[block]``.  After each update a
block's absmax is the largest magnitude in it, and each code the map entry
nearest to ``value / absmax`` (exactly nearest; of two at the same distance,
the lower).  Per param the state holds, as bitsandbytes' does:

- ``state1``, ``absmax1``, ``qmap1``: the first state (exp_avg, or the only
  one), on the signed dynamic map;
- ``state2``, ``absmax2``, ``qmap2``: the second (exp_avg_sq), on the
  unsigned map (the signed one for a state that can be negative: RMSprop's
  momentum_buffer).

A third state (AMSGrad's max_exp_avg_sq, centered RMSprop's grad_avg) stays
in float32 under torch's name, as does all the state of a param with fewer
than `min_8bit_size` elements (the base optimizer's, under torch's names).

The kernels (csrc/fastoptim/blockwise8.inc) update one block at a time in a
stack buffer: dequantize, update, new absmax, requantize.  A block whose grad
holds a NaN or inf is left untouched, param and state, and counted in the
optimizer's `skipped`.
"""
from __future__ import annotations

import functools
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _validation
from ._ext.step import Q8_KEY_OF_ONE, Q8_MAX_BLOCK, Q8_SLOTS

__all__ = ["create_dynamic_map", "quantize_blockwise", "dequantize_blockwise", "BLOCK_SIZE", "MIN_8BIT_SIZE"]

BLOCK_SIZE = 256
MIN_8BIT_SIZE = 4096


def _linspace_float32(start: float, end: float, steps: int) -> npt.NDArray[np.float32]:
    """torch.linspace(start, end, steps, dtype=torch.float32) on the CPU, bit for bit: a float32
    step, (end - start) / (steps - 1); the first half counted up from start and the second
    down from end, each value rounded once (ATen's kernel compiles start + step * i to a
    fused multiply-add; float32 products are exact in double)."""
    first, last = np.float32(start), np.float32(end)
    step = np.float64((last - first) / np.float32(steps - 1))
    index = np.arange(steps, dtype=np.float64)
    up = np.float64(first) + step * index
    down = np.float64(last) - step * (steps - 1 - index)
    out: npt.NDArray[np.float32] = np.where(index < steps // 2, up, down).astype(np.float32)
    return out


def create_dynamic_map(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> npt.NDArray[np.float32]:
    """bitsandbytes' dynamic quantization map (``bitsandbytes.functional.create_dynamic_map``).

    Per decade 10**(e - 6), e = 0 .. max_exponent_bits - 1, the midpoints of an even split
    of [0.1, 1] into 2**e parts (2**(e + 1) unsigned), scaled to the decade and mirrored
    when signed; then 0 and 1.  Sorted, 2**total_bits float32 values.

    Parameters
    ----------
    signed : bool
        Whether the map covers [-1, 1] (for a state of either sign) or [0, 1].
    max_exponent_bits, total_bits : int
        bitsandbytes' parameters of the map (7 and 8 for its optimizers).

    Returns
    -------
    numpy.ndarray
        256 float32 values, increasing (a map of fewer bits padded with zeros, as bitsandbytes
        pads it).

    Raises
    ------
    ValueError
        If the parameters do not give 2**total_bits values.

    Examples
    --------
    >>> from fastoptim.blockwise8 import create_dynamic_map
    >>> qmap = create_dynamic_map(signed=False)
    >>> qmap.shape, float(qmap[0]), float(qmap[-1])
    ((256,), 0.0, 1.0)
    """
    data: list[float] = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    scale = 0.0
    for i in range(max_exponent_bits):
        items = 2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed else \
            2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1
        boundaries = _linspace_float32(0.1, 1.0, items)
        means = (boundaries[:-1] + boundaries[1:]) / np.float32(2.0)
        scale = 10.0 ** (-(max_exponent_bits - 1) + i)
        data += (np.float32(scale) * means).tolist()
        if signed:
            data += (np.float32(-scale) * means).tolist()
    if additional_items > 0:
        boundaries = _linspace_float32(0.1, 1.0, additional_items + 1)
        means = (boundaries[:-1] + boundaries[1:]) / np.float32(2.0)
        data += (np.float32(scale) * means).tolist()
        if signed:
            data += (np.float32(-scale) * means).tolist()
    data += [0.0, 1.0]
    if len(data) != 2 ** total_bits:
        raise ValueError(f"create_dynamic_map: the map has {len(data)} values, not 2**total_bits = "
                         f"{2 ** total_bits}")
    data += [0.0] * (256 - len(data))  # bitsandbytes pads a shorter map with zeros to 256
    return np.array(sorted(data), dtype=np.float32)


@functools.lru_cache(maxsize=None)
def _standard_map(signed: bool) -> npt.NDArray[np.float32]:
    qmap = create_dynamic_map(signed)
    qmap.setflags(write=False)
    return qmap


def quantize_blockwise(values: npt.ArrayLike, qmap: npt.ArrayLike, block_size: int = BLOCK_SIZE
                       ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """Blockwise 8-bit codes of `values` (flattened in C order), the plain-NumPy reference.

    Parameters
    ----------
    values : array_like
        float32 values.
    qmap : array_like
        256 increasing float32 values (create_dynamic_map).
    block_size : int
        Elements per block.

    Returns
    -------
    codes : numpy.ndarray
        uint8, shaped like values: the nearest map entry to value / absmax of its block.
    absmax : numpy.ndarray
        float32, one per block: the largest magnitude in it (0 for a block of zeros, whose
        codes are then the code of 0).

    Raises
    ------
    ValueError
        If qmap is not 256 finite, increasing float32 values, or block_size is not positive.

    Examples
    --------
    >>> import numpy as np
    >>> from fastoptim.blockwise8 import create_dynamic_map, dequantize_blockwise, quantize_blockwise
    >>> qmap = create_dynamic_map()
    >>> codes, absmax = quantize_blockwise(np.array([0.5, -2.0], np.float32), qmap)
    >>> absmax.tolist(), dequantize_blockwise(codes, absmax, qmap).tolist()[1]
    ([2.0], -1.985...)
    """
    values = np.asarray(values, dtype=np.float32)
    qmap = checked_qmap(np.asarray(qmap, dtype=np.float32), "qmap")
    block_size = _validation.integer(block_size, "block_size", minimum=1)
    flat = values.reshape(-1)
    blocks = -(-flat.size // block_size)
    padded = np.zeros(blocks * block_size, np.float32)
    padded[:flat.size] = flat
    absmax: npt.NDArray[np.float32] = np.abs(padded.reshape(blocks, block_size)).max(axis=1, initial=0.0)
    scale = np.repeat(absmax, block_size)[:flat.size]
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.where(scale > 0, flat / np.where(scale > 0, scale, 1), np.float32(0)).astype(np.float32)
    # nearest entry, the lower of two at the same distance: the count of thresholds (the least
    # float32 above each midpoint) at or below the value
    codes = np.searchsorted(quant_table(qmap).threshold[:-1], normalized, side="right").astype(np.uint8)
    return codes.reshape(values.shape), absmax.astype(np.float32)


def dequantize_blockwise(codes: npt.ArrayLike, absmax: npt.ArrayLike, qmap: npt.ArrayLike,
                         block_size: int = BLOCK_SIZE) -> npt.NDArray[np.float32]:
    """The float32 values of blockwise 8-bit codes: ``qmap[code] * absmax[block]``.

    Parameters
    ----------
    codes : array_like
        uint8 codes.
    absmax : array_like
        float32, one per block of `block_size` elements of the flattened codes.
    qmap : array_like
        The 256-value map the codes index.
    block_size : int
        Elements per block.

    Returns
    -------
    numpy.ndarray
        float32, shaped like codes.

    Raises
    ------
    ValueError
        If absmax does not have one value per block, or block_size is not positive.

    Examples
    --------
    >>> import numpy as np
    >>> from fastoptim.blockwise8 import create_dynamic_map, dequantize_blockwise
    >>> dequantize_blockwise(np.array([255], np.uint8), np.array([3.0], np.float32), create_dynamic_map())
    array([3.], dtype=float32)
    """
    codes = np.asarray(codes, dtype=np.uint8)
    qmap = np.asarray(qmap, dtype=np.float32)
    block_size = _validation.integer(block_size, "block_size", minimum=1)
    absmax = np.asarray(absmax, dtype=np.float32).reshape(-1)
    if absmax.size != -(-codes.size // block_size):
        raise ValueError(f"absmax has {absmax.size} values for {codes.size} codes in blocks of {block_size}; "
                         f"expected {-(-codes.size // block_size)}")
    scale = np.repeat(absmax, block_size)[:codes.size]
    values: npt.NDArray[np.float32] = (qmap[codes.reshape(-1)] * scale).reshape(codes.shape)
    return values


# ---- the kernels' search tables -------------------------------------------------------

# The kernels' quantizer buckets a value v (= value / absmax, so |v| <= 1) by its sign and the
# top 16 bits of its magnitude's float32 pattern (its exponent and 7 mantissa bits), those at or
# below a first key merged into one.  A bucket holding at most one threshold gives the code with
# one lookup: code = (bucket[index] + low) >> 16, where low is the bottom 16 bits of v's pattern
# (flipped for a negative v, so that they order like v within its bucket).


def _bucket_table(threshold: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.uint32], int] | None:
    """(bucket, first_key) of the kernels' one-lookup quantizer for these thresholds, or None
    where it does not apply (two thresholds in one bucket, or one in the merged lowest).

    The bucket of a value of magnitude key k >= first_key (k = magnitude bits >> 16, smaller ones
    counted as first_key) and sign s is index k - first_key + s * per_sign; its entry is
    (c << 16) + (0x10000 - t if a threshold lies in the bucket else 0), with c the number of
    thresholds below the bucket's least value and t the threshold's low 16 bits, ordered as the
    kernel orders v's."""
    finite = threshold[:-1]
    bits = finite.view(np.uint32)
    magnitude_keys = (bits & np.uint32(0x7FFFFFFF)) >> np.uint32(16)
    first_key = min(int(magnitude_keys.min()) - 1, Q8_KEY_OF_ONE)
    if first_key < 0:
        return None
    keys = np.arange(first_key, Q8_KEY_OF_ONE + 1, dtype=np.uint32)
    low_bits = np.where(keys == first_key, np.uint32(0), keys << np.uint32(16))  # the merged bucket starts at 0
    high_bits = (keys << np.uint32(16)) | np.uint32(0xFFFF)
    low_values, high_values = low_bits.view(np.float32), high_bits.view(np.float32)
    entries = []
    for least, most in ((low_values, high_values), (-high_values, -low_values)):  # positive, then negative
        below = np.searchsorted(finite, least, side="left")
        inside = np.searchsorted(finite, most, side="right") - below
        if np.any(inside > 1) or inside[0] > 0:
            return None
        t = bits[np.minimum(below, finite.size - 1)]
        low = (t ^ np.where(t >> np.uint32(31), np.uint32(0xFFFFFFFF), np.uint32(0))) & np.uint32(0xFFFF)
        entries.append((below.astype(np.uint32) << np.uint32(16))
                       + np.where(inside == 1, np.uint32(0x10000) - low, np.uint32(0)))
    return np.concatenate(entries).astype(np.uint32), first_key


def _least_above_middles(qmap: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Per pair of neighbours, the least float32 above their midpoint, in exact arithmetic
    (a double holds the midpoint only while their magnitudes are within 2^29 of each other)."""
    up, down = np.float32(np.inf), np.float32(-np.inf)
    threshold = np.empty(qmap.size - 1, np.float32)
    for j in range(qmap.size - 1):
        middle = (Fraction(float(qmap[j])) + Fraction(float(qmap[j + 1]))) / 2
        t = np.float32(float(middle))
        while Fraction(float(t)) <= middle:
            t = np.nextafter(t, up)
        while Fraction(float(np.nextafter(t, down))) > middle:
            t = np.nextafter(t, down)
        threshold[j] = t
    return threshold


class QuantTable:
    """The kernels' search tables for one map (see fo_q8 in csrc/fastoptim/update_rules.h):
    threshold[j], the least float32 nearer to qmap[j + 1] than to qmap[j] (threshold[255] =
    inf), so that a value's code is the number of thresholds at or below it; and, where the map
    allows it (both standard maps do), the buckets of the one-lookup quantizer (_bucket_table):
    bucket, first_key and per_sign (bucket is None otherwise, and the kernels search the
    thresholds)."""

    __slots__ = ("qmap", "threshold", "bucket", "first_key", "per_sign")

    def __init__(self, qmap: npt.NDArray[np.float32]) -> None:
        self.qmap = qmap
        self.threshold = np.append(_least_above_middles(qmap), np.float32(np.inf)).astype(np.float32)
        self.threshold.setflags(write=False)
        buckets = _bucket_table(self.threshold)
        self.bucket: npt.NDArray[np.uint32] | None = None
        self.first_key = self.per_sign = 0
        if buckets is not None:
            self.bucket, self.first_key = buckets
            self.per_sign = Q8_KEY_OF_ONE + 1 - self.first_key
            self.bucket.setflags(write=False)


_TABLES: dict[bytes, QuantTable] = {}


def quant_table(qmap: npt.NDArray[np.float32]) -> QuantTable:
    """The (cached) search tables of a checked map."""
    key = qmap.tobytes()
    table = _TABLES.get(key)
    if table is None:
        if len(_TABLES) > 64:
            _TABLES.clear()
        table = _TABLES[key] = QuantTable(np.array(qmap, dtype=np.float32))
    return table


def checked_qmap(qmap: Any, where: str) -> npt.NDArray[np.float32]:
    """A state's qmap as a float32 array of 256 finite, increasing values, or a ValueError."""
    array = np.asarray(qmap)
    if array.dtype != np.float32 or array.shape != (256,) or not np.all(np.isfinite(array)) \
            or not np.all(array[1:] > array[:-1]):
        raise ValueError(f"{where} must be 256 finite, increasing float32 values (a quantization map, as "
                         f"fastoptim.blockwise8.create_dynamic_map makes), got {_describe(qmap)}")
    return array


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray) or hasattr(value, "dtype"):
        return f"dtype {value.dtype}, shape {tuple(value.shape)}"
    return type(value).__qualname__


class Quantized8:
    """One param's 8-bit state for the step plan: its quantized state slots (operand order),
    their absmax arrays and search tables, and the block size."""

    __slots__ = ("slots", "absmax", "tables", "block")

    def __init__(self, slots: tuple[int, ...], absmax: list[Any], tables: list[QuantTable], block: int) -> None:
        self.slots, self.absmax, self.tables, self.block = slots, absmax, tables, block


def checked_options(group: dict[str, Any], where: str) -> tuple[int, int]:
    """A group's (block_size, min_8bit_size), checked."""
    block = _validation.integer(group.get("block_size", BLOCK_SIZE), "block_size", minimum=1,
                                where=f" ({where})" if where else "")
    if block > Q8_MAX_BLOCK or block & (block - 1):
        # powers of two: then two block sizes give the same number of absmax values only where one
        # block holds the whole param, so a checkpoint's absmax says which block size made it
        raise ValueError(f"Invalid block_size: {block} ({where}); 8-bit state takes a power of two of at most "
                         f"{Q8_MAX_BLOCK} elements")
    low = _validation.integer(group.get("min_8bit_size", MIN_8BIT_SIZE), "min_8bit_size", minimum=0,
                              where=f" ({where})" if where else "")
    return block, low


def quantized_slots(rule: Any, slots: tuple[str | None, ...]) -> list[tuple[int, str, bool]]:
    """[(operand index, state slot name, signed map)] of the slots kept in 8 bits: the first two
    used ones; the first on the signed map, the second on the unsigned one if never negative."""
    used = [(k, name) for k, name in enumerate(slots) if name is not None][:Q8_SLOTS]
    return [(k, name, j == 0 or not rule.slot(name).nonnegative) for j, (k, name) in enumerate(used)]


def new_state(values_like: Any, fill: float, block: int, signed: bool) -> tuple[Any, Any, Any]:
    """(codes, absmax, qmap) of a new 8-bit state of the param's size, every value `fill`."""
    n = int(np.prod(values_like.shape))
    qmap = np.array(_standard_map(signed))
    if fill == 0:  # bitsandbytes' start: codes and absmax zero (every value +-0)
        return np.zeros(values_like.shape, np.uint8), np.zeros(-(-n // block), np.float32), qmap
    codes, absmax = quantize_blockwise(np.full(values_like.shape, fill, np.float32), qmap, block)
    return codes, absmax, qmap


