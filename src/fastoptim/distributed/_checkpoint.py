"""The parameter server's checkpoints: one file per shard, written atomically,
reassembled into the whole model's params and optimizer state.

A shard's file holds its pieces ((param index, lo, hi) ranges of the params'
flat views, in the order of the shard optimizer's params), their values, the
shard optimizer's state_dict, the update count and, for DC-ASGD-a, the mean
squares.  It is written to a temporary file beside the target, flushed and
fsynced, renamed over the target (atomic on POSIX), and the directory is
fsynced: a job killed at any moment leaves the previous complete file.

Files are pickles (like torch.save): load only checkpoints you trust.

API
---
``shard_path(path, shard, n_shards)``   path itself for one shard, else "<path>.shard<s>-of-<n>"
``atomic_write(path, payload)``         pickle payload to path atomically
``load(path)``                          the reassembled checkpoint (ParameterServer.load_checkpoint)
``slice_state_dict(state_dict, params, pieces, groups)``   a whole model's optimizer state_dict
                                        cut to a shard's pieces
"""
import copy
import glob
import os
import pickle
import re
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from ..typing import FloatArray
from ._buckets import Piece

FORMAT = "fastoptim.distributed.ParameterServer checkpoint"
VERSION = 1


def shard_path(path: str, shard: int, n_shards: int) -> str:
    return path if n_shards == 1 else f"{path}.shard{shard}-of-{n_shards}"


def atomic_write(path: str, payload: dict[str, Any]) -> None:
    """Write pickle(payload) to path so that path always holds a complete file."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as f:
        pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _shard_files(path: str) -> list[str]:
    """The files of the checkpoint at path: [path], or its shard files in shard order."""
    pattern = re.compile(re.escape(os.path.basename(path)) + r"\.shard(\d+)-of-(\d+)$")
    sets: dict[int, dict[int, str]] = {}
    for name in glob.glob(glob.escape(path) + ".shard*-of-*"):
        match = pattern.match(os.path.basename(name))
        if match:
            sets.setdefault(int(match.group(2)), {})[int(match.group(1))] = name
    if os.path.exists(path):
        if sets:
            raise ValueError(f"both a one-server checkpoint {path!r} and shard files beside it exist; "
                             f"remove the stale one")
        return [path]
    if not sets:
        raise FileNotFoundError(f"no checkpoint at {path!r} (nor shard files {path}.shard<s>-of-<n>)")
    if len(sets) > 1:
        raise ValueError(f"shard files of checkpoints with {sorted(sets)} servers exist beside {path!r}; "
                         f"remove the stale ones")
    (n_shards, found), = sets.items()
    missing = sorted(set(range(n_shards)) - set(found))
    if missing:
        raise ValueError(f"the checkpoint {path!r} of {n_shards} shards lacks shard file(s) {missing}")
    return [found[s] for s in range(n_shards)]


def _read(name: str) -> dict[str, Any]:
    with open(name, "rb") as f:
        payload = pickle.load(f)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{name!r} is not a fastoptim ParameterServer checkpoint")
    if payload.get("version") != VERSION:
        raise ValueError(f"{name!r} has checkpoint version {payload.get('version')!r}; this fastoptim "
                         f"reads version {VERSION}")
    return payload


def load(path: Union[str, "os.PathLike[str]"]) -> dict[str, Any]:
    """{"params": [...], "updates": int, "optimizer": state_dict, "mean_square": [...] or None}.

    params (and mean_square) are arrays in the model's flat param order; the
    optimizer state_dict is that of the whole model's optimizer, so it loads into
    a plain optimizer over the params.  With several shards, "updates" is the
    smallest of their counts (a job killed between two shards' writes leaves
    shards a few updates apart).
    """
    path = os.fspath(path)
    payloads = [_read(name) for name in _shard_files(path)]
    first = payloads[0]
    model = first["model"]
    for s, payload in enumerate(payloads):
        if payload["shard"] != s or payload["shards"] != len(payloads) or payload["model"] != model:
            raise ValueError(f"the shard files of {path!r} are not from one model and one job")
    params = [np.zeros(shape, dtype=dtype) for _, shape, dtype in model]
    params_filled = [0] * len(params)
    has_mean_square = first["mean_square"] is not None
    mean_square = [np.zeros_like(p) for p in params] if has_mean_square else None
    state: dict[int, dict[str, Any]] = {}
    state_filled: dict[tuple[int, str], int] = {}
    for payload in payloads:
        optimizer_state = payload["optimizer"]["state"]
        for k, (i, lo, hi) in enumerate(payload["pieces"]):
            if hi == lo:
                continue
            params[i].reshape(-1)[lo:hi] = payload["params"][k]
            params_filled[i] += hi - lo
            if mean_square is not None:
                mean_square[i].reshape(-1)[lo:hi] = payload["mean_square"][k]
            for name, value in optimizer_state.get(k, {}).items():
                entry = state.setdefault(i, {})
                if isinstance(value, np.ndarray) and value.shape == (hi - lo,):
                    if name not in entry:
                        entry[name] = np.zeros(params[i].shape, dtype=value.dtype)
                    entry[name].reshape(-1)[lo:hi] = value
                    state_filled[i, name] = state_filled.get((i, name), 0) + hi - lo
                elif name not in entry:
                    entry[name] = copy.deepcopy(value)
    for i, (p, filled) in enumerate(zip(params, params_filled)):
        if filled != p.size:
            raise ValueError(f"the checkpoint {path!r} covers {filled} of the {p.size} elements of param {i}")
    for (i, name), filled in state_filled.items():
        if filled != params[i].size:
            raise ValueError(f"the checkpoint {path!r} holds state[{i}][{name!r}] for {filled} of "
                             f"{params[i].size} elements: its shards do not agree")
    groups, start = [], 0
    keys = [key for key, _, _ in model]
    for group, size in zip(first["optimizer"]["param_groups"], first["group_sizes"]):
        packed = {k: copy.deepcopy(v) for k, v in group.items() if k not in ("params", "param_names")}
        packed["params"] = list(range(start, start + size))
        if first["named"]:
            packed["param_names"] = keys[start:start + size]
        groups.append(packed)
        start += size
    optimizer = {"state": state, "param_groups": groups, "step_count": first["optimizer"].get("step_count", 0)}
    return {"params": params, "updates": min(p["updates"] for p in payloads), "optimizer": optimizer,
            "mean_square": mean_square}


def slice_state_dict(state_dict: dict[str, Any], params: Sequence[FloatArray], pieces: Sequence[Piece],
                     group_pieces: Sequence[Sequence[Piece]]) -> dict[str, Any]:
    """A whole model's optimizer state_dict (as load() returns it) cut to a shard.

    params: the whole model's arrays; pieces: the shard optimizer's params as
    (param index, lo, hi), in its order; group_pieces: the same, per group.
    Per-element state (arrays shaped like their param) is sliced, the rest copied.
    """
    state: dict[int, dict[str, Any]] = {}
    for k, (i, lo, hi) in enumerate(pieces):
        entry = state_dict["state"].get(i)
        if entry is None:
            continue
        state[k] = {name: (np.array(value.reshape(-1)[lo:hi]) if isinstance(value, np.ndarray)
                           and value.shape == params[i].shape else copy.deepcopy(value))
                    for name, value in entry.items()}
    groups, start = [], 0
    for group, members in zip(state_dict["param_groups"], group_pieces):
        packed = {k: copy.deepcopy(v) for k, v in group.items() if k not in ("params", "param_names")}
        packed["params"] = list(range(start, start + len(members)))
        groups.append(packed)
        start += len(members)
    return {"state": state, "param_groups": groups, "step_count": state_dict.get("step_count", 0)}
