"""Do all ranks hold the same model?  Checked at construction, on every rank.

A model that differs across ranks (number, names, shapes or dtypes of params,
or the optimizer class) would make the first collective mismatch: a hang, a
truncation error on some ranks only, or silently wrong results.  Instead every
rank gathers every rank's description of its model (non-blocking, bounded by
the timeout), compares them all to rank 0's in the same way, and so raises the
same ValueError, naming what differs, on every rank.

API
---
``check_same_model(paramset, comm, timeout, who, extra=None)``
    paramset: a _buckets.ParamSet; who: the caller for messages
    ("DataParallel"); extra: a dict of further picklable facts that must agree
    (e.g. {"optimizer": "Adam", "period": 10}).  Returns None or raises
    ValueError on every rank.
``differences(descriptions)``
    the list of problems among per-rank descriptions (pure function, tested
    without MPI).
"""
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from ._buckets import ParamSet
from ._mpi import MPI, allgather_object

MAX_PROBLEMS = 6   # list this many differences; the first usually tells the story


def check_same_model(paramset: ParamSet, comm: MPI.Intracomm, timeout: float, who: str,
                     extra: Optional[Mapping[str, Any]] = None) -> None:
    """Raise the same ValueError on every rank if the ranks' models differ."""
    mine = {"params": paramset.describe(), "extra": dict(extra or {})}
    everyone = allgather_object(mine, comm, timeout, f"the model descriptions ({who})")
    problems = differences(everyone)
    if problems:
        more = len(problems) - MAX_PROBLEMS
        raise ValueError(f"{who}: the model differs across ranks: " + "; ".join(problems[:MAX_PROBLEMS])
                         + (f"; and {more} more" if more > 0 else "")
                         + " (every rank must build the same params, in the same order)")


def differences(descriptions: Sequence[dict[str, Any]]) -> list[str]:
    """What differs between rank 0's description and each other rank's."""
    problems: list[str] = []
    ref = descriptions[0]
    for rank, desc in enumerate(descriptions[1:], start=1):
        for name, value in ref["extra"].items():
            if desc["extra"].get(name) != value:
                problems.append(f"{name} is {value!r} on rank 0 but {desc['extra'].get(name)!r} on rank {rank}")
        mine, theirs = ref["params"], desc["params"]
        if len(mine) != len(theirs):
            problems.append(f"rank 0 has {len(mine)} params but rank {rank} has {len(theirs)}")
        for (key0, shape0, dtype0), (key, shape, dtype) in zip(mine, theirs):
            if key0 != key:
                problems.append(f"param {key0!r} on rank 0 is {key!r} on rank {rank}")
                continue
            if shape0 != shape:
                problems.append(f"params[{key!r}] has shape {shape0} on rank 0 but {shape} on rank {rank}")
            if dtype0 != dtype:
                problems.append(f"params[{key!r}] has dtype {dtype0} on rank 0 but {dtype} on rank {rank}")
    return problems
