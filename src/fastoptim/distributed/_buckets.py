"""The params of a model as flat spaces: structure, preallocated flat buckets and
element-wise shards.  No MPI here (every algorithm, and the simulator, can use it).

A model's params come as fastoptim optimizers take them: a list of arrays, a
dict name -> array, or a list of param group dicts.  :class:`ParamSet` keeps
that structure (to read grads in it and to hand results back in it) and the
flat param order (groups in order).  Arrays must be C-contiguous, writeable,
native float32/float64 (the optimizers' rule): then ``a.reshape(-1)`` is a
view and slices of it are the contiguous 1-D views that buckets and shards
are made of.  Nothing here copies a param.

Params of one dtype, laid end to end in flat order, form a :class:`FlatSpace`
(a model with float32 and float64 params has two).  Positions in a space are
element offsets.  On a space:

- :func:`shard_bounds` splits [0, size) element-wise into contiguous shards,
  equal to within one element (ZeRO's and a parameter server's shards);
- :meth:`FlatSpace.pieces` lists the parts of params overlapping a range
  ([start, stop) of the space -> (param index, lo, hi) element ranges of each
  param's flat view), and :func:`piece_views` gives them as 1-D views;
- :func:`make_buckets` cuts the space into :class:`Bucket` s, each one
  preallocated flat buffer (one message per bucket, not per tensor), either
  at param boundaries (data parallel: a bucket's params can step as soon as it
  is reduced) or at exact element counts.

API
---
``ParamSet(params, what="params")``      .arrays .keys .structure .spaces .describe()
``ParamSet.from_optimizer(optimizer)``    the optimizer's params, in its structure
``ParamSet.flatten(values, what, allow_none=False)``   values in the structure -> flat list
``ParamSet.unflatten(flat)``              flat list -> the structure (groups: one list/dict per group)
``ParamSet.for_optimizer(flat)``          flat list -> what the optimizer's step() takes
``FlatSpace``                             .dtype .indices .offsets .size .pieces(start, stop)
``shard_bounds(size, n_shards)``          int64 array of n_shards + 1 bounds
``flat_view(array)``                      the 1-D view of a C-contiguous array
``laid_end_to_end(arrays, space)``        the space as one 1-D view of the params' own memory, if they
                                          already lie end to end in flat order (else None)
``piece_views(arrays, pieces)``           1-D views of (index, lo, hi) pieces
``Shard(paramset, index, n_shards)``      shard `index` of every space: .ranges .pieces .views .size
                                          .flat_views() .group_members() .param_groups()
``make_buckets(space, arrays, bucket_elements, whole_params=True)``  list of Bucket
``Bucket``                                .space .start .stop .buffer .pieces .offsets .views(arrays)
"""
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from ..optim.optimizer import _check_param
from ..typing import FloatArray

#: A param's key: its name (params given by name) or its flat index.
Key = Union[str, int]
#: (param index, lo, hi): the elements [lo, hi) of a param's flat view.
Piece = tuple[int, int, int]
#: An int64 array of offsets or bounds.
Int64Array = npt.NDArray[np.int64]

# Default bucket size.  The reductions are blocking MPI collectives (see _collectives)
# and every bucket costs its own collective calls: a few large buckets beat many small
# ones when each is reduced, then stepped (on 200 x 2^14 float32 params, 1 bucket ran
# 1.8x faster than 4 and 3.4x faster than 13, with the sharded sum of 3+ ranks).
# DataParallel(overlap=True) steps bucket k in a thread while bucket k + 1 is reduced;
# whether smaller buckets then pay off was not settled (the machine was loaded with
# other work: medians of 1-4 MiB buckets swung 3x between launches), so 32 MiB stays.
BUCKET_BYTES = 32 << 20


class ParamSet:
    """A model's params: flat order, keys, structure and per-dtype flat spaces.

    params: a list/tuple of arrays, a dict name -> array, or a list of param
    group dicts ({'params': list or dict, ...hyperparameters}).
    """

    def __init__(self, params: Any, what: str = "params") -> None:
        if isinstance(params, np.ndarray) or not isinstance(params, (list, tuple, Mapping)):
            raise TypeError(f"{what} must be a list of arrays, a dict name -> array, or a list of "
                            f"param group dicts, got {type(params).__qualname__}")
        self.what = what
        self.group_options: list[dict[str, Any]] = []   # per group: its dict without 'params'/'param_names'
        self.group_sizes: list[int] = []
        self.group_named: list[bool] = []
        groups: list[Mapping[str, Any]]
        if isinstance(params, Mapping):
            self.structure = "dict"
            groups = [{"params": params}]
        elif params and all(isinstance(g, Mapping) for g in params):
            self.structure = "groups"
            groups = list(params)
        elif any(isinstance(g, Mapping) for g in params):
            raise TypeError(f"{what} mixes arrays and param group dicts")
        else:
            self.structure = "list"
            groups = [{"params": list(params)}]
        self.arrays: list[FloatArray] = []
        self.keys: list[Key] = []
        for gi, group in enumerate(groups):
            if "params" not in group:
                raise TypeError(f"{what}[{gi}] is a param group without a 'params' entry")
            members: Any = group["params"]
            if isinstance(members, np.ndarray):
                members = [members]
            if isinstance(members, Mapping):
                names = list(members)
                if not all(isinstance(n, str) for n in names):
                    raise TypeError(f"{what}: param names must be strings")
                arrays = list(members.values())
            else:
                names, arrays = None, list(members)
            keys: Sequence[Key]
            self.group_named.append(names is not None)
            keys = names if names is not None else list(range(len(self.arrays), len(self.arrays) + len(arrays)))
            for key, a in zip(keys, arrays):
                if names is not None and key in self.keys:
                    raise ValueError(f"param name {key!r} appears more than once")
                _check_param(a, f"{what}[{key!r}]")
            self.arrays.extend(arrays)
            self.keys.extend(keys)
            self.group_sizes.append(len(arrays))
            self.group_options.append({k: v for k, v in group.items() if k not in ("params", "param_names")})
        if not self.arrays:
            raise ValueError(f"{what} is empty")
        if len(set(self.group_named)) > 1:
            raise TypeError(f"{what}: name all params (dicts) or none (lists), not a mix")
        self.named = self.group_named[0]
        self.spaces = _spaces(self.arrays)

    @classmethod
    def from_optimizer(cls, optimizer: Any, what: str = "params") -> "ParamSet":
        """The params of a fastoptim optimizer, in the structure its step() takes grads."""
        groups = getattr(optimizer, "param_groups", None)
        if not isinstance(groups, list) or not groups or not all(isinstance(g, Mapping) for g in groups):
            raise TypeError(f"expected a fastoptim optimizer (with param_groups), got {type(optimizer).__qualname__}")
        packed = []
        for g in groups:
            members = g["params"]
            if "param_names" in g:
                members = dict(zip(g["param_names"], members))
            packed.append({**{k: v for k, v in g.items() if k not in ("params", "param_names")}, "params": members})
        if len(packed) == 1:
            return cls(packed[0]["params"], what)
        return cls(packed, what)

    def __len__(self) -> int:
        return len(self.arrays)

    def describe(self) -> list[tuple[Key, tuple[int, ...], str]]:
        """(key, shape, dtype name) per param: what ranks compare to agree on a model."""
        return [(k, tuple(a.shape), a.dtype.name) for k, a in zip(self.keys, self.arrays)]

    def flatten(self, values: Any, what: str = "grads", allow_none: bool = False) -> list[Any]:
        """Values (grads, say) given in the params' structure, as a flat list in param order.

        Accepts what the optimizers' step() accepts: a list for listed params, a
        dict by name for named params, and for param groups a flat list or one
        list/dict per group.  Every value must be an array like its param (same
        shape and dtype; any memory layout), or None if allow_none; a 0-d param
        also takes a NumPy scalar of its dtype (err.mean() for a bias), as the
        optimizers do, returned as a 0-d array.
        """
        n = len(self.arrays)
        flat: list[Any]
        if self.structure == "dict" or (self.named and isinstance(values, Mapping)):
            if not isinstance(values, Mapping):
                raise TypeError(f"params were given by name, so {what} must be a dict with the same "
                                f"names, got {type(values).__qualname__}")
            flat = _from_mapping(values, self.keys, what)
        elif isinstance(values, np.ndarray) or not isinstance(values, (list, tuple)):
            raise TypeError(f"{what} must be a list of {n} arrays, got {type(values).__qualname__}")
        elif self.structure == "groups" and any(isinstance(v, (list, tuple, Mapping)) for v in values):
            if len(values) != len(self.group_sizes):
                raise ValueError(f"got {what} for {len(values)} groups, but there are "
                                 f"{len(self.group_sizes)} param groups")
            flat = []
            start = 0
            for gi, (count, v) in enumerate(zip(self.group_sizes, values)):
                keys = self.keys[start:start + count]
                start += count
                if isinstance(v, Mapping):
                    flat.extend(_from_mapping(v, keys, f"{what}[{gi}]"))
                elif isinstance(v, (list, tuple)) and len(v) == count:
                    flat.extend(v)
                else:
                    raise ValueError(f"{what}[{gi}] must hold the {count} values of param group {gi}")
        else:
            if len(values) != n:
                raise ValueError(f"got {len(values)} {what} for {n} params")
            flat = list(values)
        for k, (key, p, v) in enumerate(zip(self.keys, self.arrays, flat)):
            if v is None and allow_none:
                continue
            if isinstance(v, np.generic) and p.ndim == 0 and v.dtype == p.dtype:
                flat[k] = v = np.asarray(v)
            if not isinstance(v, np.ndarray):
                raise TypeError(f"{what}[{key!r}] must be a numpy array like params[{key!r}], got "
                                + ("None (every rank must give every grad)" if v is None else type(v).__qualname__))
            if v.shape != p.shape:
                raise ValueError(f"{what}[{key!r}] has shape {v.shape} but params[{key!r}] has shape {p.shape}")
            if v.dtype != p.dtype:
                raise TypeError(f"{what}[{key!r}] has dtype {v.dtype} but params[{key!r}] has dtype {p.dtype}")
        return flat

    def unflatten(self, flat: Sequence[Any]) -> Any:
        """A flat list in param order, in the params' structure (groups: one list or dict per group)."""
        if self.structure == "list":
            return list(flat)
        if self.structure == "dict":
            return dict(zip(self.keys, flat))
        out: list[Any] = []
        start = 0
        for count, named in zip(self.group_sizes, self.group_named):
            part = flat[start:start + count]
            out.append(dict(zip(self.keys[start:start + count], part)) if named else list(part))
            start += count
        return out

    def for_optimizer(self, flat: list[Any]) -> Any:
        """A flat list in param order as an optimizer over these params takes it in step()."""
        return dict(zip(self.keys, flat)) if self.structure == "dict" else flat


def _from_mapping(values: Mapping[Any, Any], keys: Sequence[Key], what: str) -> list[Any]:
    missing = [k for k in keys if k not in values]
    extra = [k for k in values if k not in set(keys)]
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {extra}"] if extra else [])
        raise ValueError(f"{what} does not match the params' names: " + "; ".join(parts))
    return [values[k] for k in keys]


class FlatSpace:
    """The params of one dtype laid end to end in flat param order.

    indices: the params' flat indices; offsets: int64, offsets[j] is where
    param indices[j] starts in the space (offsets[-1] == size).
    """

    def __init__(self, dtype: npt.DTypeLike, indices: Sequence[int], sizes: Sequence[int]) -> None:
        self.dtype = np.dtype(dtype)
        self.indices = list(indices)
        self.offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        self.size = int(self.offsets[-1])

    def pieces(self, start: int, stop: int) -> list[Piece]:
        """The parts of params in [start, stop): (param index, lo, hi), lo/hi in the param's flat view."""
        out: list[Piece] = []
        j = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while j < len(self.indices) and self.offsets[j] < stop:
            begin, end = int(self.offsets[j]), int(self.offsets[j + 1])
            lo, hi = max(start, begin) - begin, min(stop, end) - begin
            if hi > lo:
                out.append((self.indices[j], lo, hi))
            j += 1
        return out


def _spaces(arrays: Sequence[FloatArray]) -> list[FlatSpace]:
    by_dtype: dict[np.dtype[Any], list[int]] = {}
    for i, a in enumerate(arrays):
        by_dtype.setdefault(a.dtype, []).append(i)
    return [FlatSpace(dtype, idx, [arrays[i].size for i in idx]) for dtype, idx in by_dtype.items()]


def shard_bounds(size: int, n_shards: int) -> Int64Array:
    """Bounds of n_shards contiguous element-wise shards of [0, size): shard r is
    [bounds[r], bounds[r + 1]); sizes differ by at most one element."""
    r = np.arange(n_shards + 1, dtype=np.int64)
    return (r * size) // n_shards


def flat_view(array: FloatArray) -> FloatArray:
    """The 1-D view of a C-contiguous array (never a copy)."""
    view = array.reshape(-1)
    if array.size and view.__array_interface__["data"][0] != array.__array_interface__["data"][0]:
        raise AssertionError("reshape(-1) copied a C-contiguous array")  # pragma: no cover
    return view


def laid_end_to_end(arrays: Sequence[FloatArray], space: "FlatSpace") -> Optional[FloatArray]:
    """The space as one 1-D view of the params' memory, when its params already lie
    end to end in one buffer in flat order (a model allocated as views of one array),
    else None.  Writing into the view writes exactly the params' elements, so a
    gather can land in them with no copy."""
    if len(space.indices) == 1:
        return flat_view(arrays[space.indices[0]])
    itemsize = space.dtype.itemsize
    # where the space would begin: the first param with elements (an empty one has no place)
    placed = [(j, i) for j, i in enumerate(space.indices) if arrays[i].size]
    if not placed:
        return None
    j0, i0 = placed[0]
    begin = arrays[i0].__array_interface__["data"][0] - int(space.offsets[j0]) * itemsize
    for j, i in placed:
        if arrays[i].__array_interface__["data"][0] != begin + int(space.offsets[j]) * itemsize:
            return None
    root = arrays[i0]
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not ((root.flags.c_contiguous or root.flags.f_contiguous) and root.flags.writeable):
        return None
    raw = root.reshape(-1, order="A").view(np.uint8)  # its memory, in memory order
    start = begin - raw.__array_interface__["data"][0]
    stop = start + space.size * itemsize
    if start < 0 or stop > raw.size:
        return None
    return raw[start:stop].view(space.dtype)


def piece_views(arrays: Sequence[FloatArray], pieces: Sequence[Piece]) -> list[FloatArray]:
    """The 1-D views arrays[i].reshape(-1)[lo:hi] of (i, lo, hi) pieces."""
    return [flat_view(arrays[i])[lo:hi] for i, lo, hi in pieces]


class Shard:
    """Shard `index` of `n_shards` of every flat space of a ParamSet (element-wise contiguous).

    Per space (in paramset.spaces order): bounds (every shard's), ranges[s] =
    (start, stop) of this shard, pieces[s] = the (param index, lo, hi) parts of
    params in it, views[s] = those parts as 1-D views into the params.
    """

    def __init__(self, paramset: ParamSet, index: int, n_shards: int) -> None:
        if not 0 <= index < n_shards:
            raise ValueError(f"shard index {index} is not in 0..{n_shards - 1}")
        self.paramset, self.index, self.n_shards = paramset, index, n_shards
        self.bounds = [shard_bounds(space.size, n_shards) for space in paramset.spaces]
        self.ranges = [(int(b[index]), int(b[index + 1])) for b in self.bounds]
        self.pieces = [space.pieces(a, b) for space, (a, b) in zip(paramset.spaces, self.ranges)]
        self.views = [piece_views(paramset.arrays, p) for p in self.pieces]
        self.size = sum(b - a for a, b in self.ranges)

    def flat_views(self) -> list[tuple[int, FloatArray]]:
        """Every piece's view, space after space: (param index, view) pairs."""
        return [(i, v) for pieces, views in zip(self.pieces, self.views) for (i, _, _), v in zip(pieces, views)]

    def group_members(self) -> list[list[Optional[tuple[int, int]]]]:
        """Per param group of the model, its pieces in this shard as (space index, piece index)
        pairs in the shard's order; None stands for the empty view of a group with no
        element in this shard."""
        ps = self.paramset
        group_of = [g for g, count in enumerate(ps.group_sizes) for _ in range(count)]
        members: list[list[Optional[tuple[int, int]]]] = [[] for _ in ps.group_sizes]
        for s, pieces in enumerate(self.pieces):
            for k, (i, _, _) in enumerate(pieces):
                members[group_of[i]].append((s, k))
        return [m or [None] for m in members]

    def param_groups(self) -> list[dict[str, Any]]:
        """The shard's views as param groups mirroring the model's (with each group's
        options), for an optimizer over the shard.  Every group is kept, so group g
        of the shard's optimizer is group g of the model's; a group with no element
        in this shard holds one empty view (see group_members)."""
        ps = self.paramset
        firsts = np.cumsum([0] + ps.group_sizes[:-1])
        groups = []
        for options, first, members in zip(ps.group_options, firsts, self.group_members()):
            views = [flat_view(ps.arrays[first])[:0] if m is None else self.views[m[0]][m[1]] for m in members]
            groups.append({**options, "params": views})
        return groups


class Bucket:
    """A range [start, stop) of a flat space with its preallocated flat buffer.

    pieces: (param index, lo, hi) parts of params in the range, in order;
    offsets[k] is where piece k starts in the buffer.
    """

    def __init__(self, space: FlatSpace, start: int, stop: int) -> None:
        self.space = space
        self.start, self.stop = start, stop
        self.buffer = np.zeros(stop - start, dtype=space.dtype)
        self.pieces = space.pieces(start, stop)
        self.offsets = np.zeros(len(self.pieces) + 1, dtype=np.int64)
        np.cumsum([hi - lo for _, lo, hi in self.pieces], out=self.offsets[1:])

    def views(self, arrays: Sequence[FloatArray]) -> list[FloatArray]:
        """Per piece, its part of the buffer: shaped like the param when the piece is the
        whole param, else 1-D."""
        out = []
        for (i, lo, hi), begin in zip(self.pieces, self.offsets):
            part = self.buffer[begin:begin + hi - lo]
            out.append(part.reshape(arrays[i].shape) if hi - lo == arrays[i].size else part)
        return out


def make_buckets(space: FlatSpace, bucket_elements: int, whole_params: bool = True) -> list[Bucket]:
    """Cut a flat space into buckets of about bucket_elements elements.

    whole_params=True cuts only at param boundaries: a bucket closes after the
    param that brings it to bucket_elements or more (so one large param may make
    a bucket larger than that).  whole_params=False cuts every bucket_elements
    elements exactly.  A space of zero elements has one empty bucket.
    """
    if bucket_elements < 1:
        raise ValueError(f"bucket_elements must be >= 1, got {bucket_elements}")
    if space.size == 0:
        return [Bucket(space, 0, 0)]
    if not whole_params:
        edges = list(range(0, space.size, bucket_elements)) + [space.size]
    else:
        # Close a bucket after the param that brings it to bucket_elements, and after the last.
        ends = [int(e) for e in space.offsets[1:]]
        edges = [0]
        for j, end in enumerate(ends):
            if end - edges[-1] >= bucket_elements or j == len(ends) - 1:
                if end > edges[-1]:
                    edges.append(end)
    return [Bucket(space, a, b) for a, b in zip(edges[:-1], edges[1:])]
