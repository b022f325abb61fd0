"""ZeRO stage 1 (Rajbhandari et al. 2020): optimizer state sharded element-wise over the ranks."""
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from .._ext import runtime
from .._eightbit import Blockwise8bit
from ..optim import Optimizer
from ..optim.optimizer import _to_numpy
from ..typing import FloatArray, Grads, Params
from ._buckets import ParamSet, Shard
from ._collectives import ShardAllgather, ShardedSum, broadcast_arrays, fused_step
from ._consistency import check_same_model
from ._docs import shared_docs
from ._mpi import DEFAULT_TIMEOUT, MPI, allgather_object, blocking, check_timeout, resolve_comm


def _per_tensor(optimizer_class: type, step_scalars: bool = False) -> str:
    """Why the class's update is not element-wise (a reason), or '' if it is.

    A class may say so itself (elementwise = False); a generated class says it
    through its Rule: a rule at the Python level (Muon's matrix products, LBFGS),
    per-tensor scalar state (NAdam's mu_product, ASGD's eta and mu), or several
    passes over each tensor (LAMB's norms).  step_scalars=True accepts scalar
    state that follows from the step and the options alone (Slot.from_step: NAdam's
    and ASGD's): pieces of a tensor that always step together keep equal copies
    of it, as ZeroRedundancyOptimizer's do.
    """
    if getattr(optimizer_class, "elementwise", True) is not True:
        return "elementwise = False"
    rule = getattr(optimizer_class, "rule", None)
    if rule is None:
        return ""
    if rule.python is not None:
        return "it steps whole tensors at the Python level"
    scalars = [slot.name for slot in rule.state if slot.scalar and not (step_scalars and slot.from_step)]
    if scalars:
        return f"per-tensor scalar state {', '.join(scalars)}"
    number, _ = runtime.rule_fields()[rule.kernel]
    passes = runtime.rule_passes(number)
    return f"{passes} passes over each tensor" if passes > 1 else ""


@shared_docs
class ZeroRedundancyOptimizer:
    """An optimizer whose state is split over the ranks: each holds 1/N of it.

    Every rank passes its own replica of the same model, and optimizer_class is
    built on this rank's shard with ``**defaults``.  The params are flattened (per dtype) and
    each rank owns one element-wise contiguous shard: shards are equal to within
    one element and cut across tensor boundaries, and the shard's optimizer
    runs on 1-D views of the parts of params in the shard (no copies).

    step(grads) takes this rank's local grads: each shard's grads are summed
    onto its rank (a reduce-scatter, as MPI_Reduce per shard; the mean with
    average=True), the shard's fused step runs, and an all-gather writes every
    rank's new params into the params' memory (straight into it, with no copy,
    when each dtype's params lie end to end in one array in their flat order:
    allocate the model as views of one array to save a pass over it per step).
    Results equal DataParallel's.  As with DataParallel, grads
    written into grad_buffers() are not copied, and at construction the model is
    checked to be the same on every rank and rank 0's params are copied to all.

    state_dict() (a collective: call it on every rank) gathers the full state in
    the layout of optimizer_class over the whole params, so a checkpoint loads
    into a plain optimizer; load_state_dict() takes such a full state (a plain
    optimizer's too) and keeps this rank's shard of it.

    Parameters
    ----------
    params : list, dict or list of param groups
        This rank's replica of the model.
    optimizer_class : type
        A fastoptim optimizer class with an element-wise rule (fastoptim.Adam, ...;
        NAdam and ASGD too: their per-tensor scalars follow from the step alone, so
        every piece of a tensor keeps an equal copy).
    {{comm}}
    average : bool, default True
        Step on the mean of the ranks' grads (False: their sum).
    {{timeout}}
    **defaults
        The optimizer's hyperparameters (lr=..., betas=...).

    Raises
    ------
    TypeError
        optimizer_class is not a fastoptim optimizer class, or a bad comm or average.
    ValueError
        A per-tensor rule (LAMB, Muon, LBFGS: use DataParallel), a bad
        timeout, or a model that differs across ranks (raised on every rank).

    Examples
    --------
    {{mpi_example}}
    >>> from fastoptim.distributed import ZeroRedundancyOptimizer
    >>> params = [np.zeros(1000, np.float32)]
    >>> zero = ZeroRedundancyOptimizer(params, fastoptim.Adam, lr=1e-3)  # doctest: +SKIP
    >>> zero.step([np.ones(1000, np.float32)])  # doctest: +SKIP
    >>> zero.local_state_nbytes()  # m and v of 500 elements on each of 2 ranks  # doctest: +SKIP
    4000
    """

    def __init__(self, params: Params, optimizer_class: type[Optimizer], comm: Optional[MPI.Intracomm] = None, *,
                 average: bool = True, timeout: float = DEFAULT_TIMEOUT, **defaults: Any) -> None:
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError(f"optimizer_class must be a fastoptim optimizer class (fastoptim.Adam, ...), "
                            f"got {optimizer_class!r}")
        if issubclass(optimizer_class, Blockwise8bit):
            raise ValueError(f"ZeroRedundancyOptimizer cuts params into element-wise shards across tensor "
                             f"boundaries, and {optimizer_class.__name__}'s 8-bit blocks would straddle them "
                             f"(each block's absmax spans its whole block): use DataParallel instead")
        per_tensor = _per_tensor(optimizer_class, step_scalars=True)
        if per_tensor:
            raise ValueError(f"ZeroRedundancyOptimizer cuts params into element-wise shards across tensor "
                             f"boundaries, so the update rule's math must be element-wise; "
                             f"{optimizer_class.__name__}'s is per tensor ({per_tensor}): use DataParallel instead")
        if not isinstance(average, (bool, np.bool_)):
            raise TypeError(f"average must be True (the mean over ranks) or False (the sum), got {average!r}")
        self.comm = resolve_comm(comm)
        self.timeout = check_timeout(timeout)
        self.average = bool(average)
        self.model = model = ParamSet(params)
        check_same_model(model, self.comm, self.timeout, "ZeroRedundancyOptimizer",
                         extra={"optimizer": optimizer_class.__name__, "average": self.average})
        broadcast_arrays(model.arrays, self.comm, 0, self.timeout, "ZeroRedundancyOptimizer's copy of rank 0's params")
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        self.shard = shard = Shard(model, self.rank, self.size)
        self.optimizer = optimizer_class(shard.param_groups(), **defaults)
        rule = getattr(optimizer_class, "rule", None)
        # Per-tensor scalar state (NAdam's mu_product): every piece of a tensor holds an equal copy.
        self._scalar_slots = frozenset(slot.name for slot in rule.state if slot.scalar) if rule else frozenset()

        # Full-size flat grad buffers, one per dtype space (the reduce-scatter's input) ...
        self._grad_flat = [np.zeros(space.size, dtype=space.dtype) for space in model.spaces]
        self._grad_views = [np.zeros_like(a) for a in model.arrays]
        for space, flat in zip(model.spaces, self._grad_flat):
            for j, i in enumerate(space.indices):
                a = model.arrays[i]
                self._grad_views[i] = flat[space.offsets[j]:space.offsets[j + 1]].reshape(a.shape)
        # Each shard's grads are summed in place, onto its rank: the shard's optimizer reads them there.
        self._sums = [ShardedSum(flat, bounds, self.comm) for flat, bounds in zip(self._grad_flat, shard.bounds)]
        self._pieces: list[Optional[tuple[int, int, int]]] = []          # per param of the shard's optimizer: (param index, lo, hi), None if empty
        optimizer_grads: list[FloatArray] = []
        start_of = [{i: int(space.offsets[j]) for j, i in enumerate(space.indices)} for space in model.spaces]
        for members, group in zip(shard.group_members(), self.optimizer.param_groups):
            for m, view in zip(members, group["params"]):
                if m is None:
                    self._pieces.append(None)
                    optimizer_grads.append(np.zeros(0, dtype=view.dtype))
                    continue
                s, k = m
                i, lo, hi = shard.pieces[s][k]
                start = start_of[s][i] + lo  # the piece's place in the space
                self._pieces.append((i, lo, hi))
                optimizer_grads.append(self._grad_flat[s][start:start + hi - lo])
        self._optimizer_grads = optimizer_grads
        self._gathers = ([ShardAllgather(model.arrays, space, bounds, self.comm)
                          for space, bounds in zip(model.spaces, shard.bounds)] if self.size > 1 else [])

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The shard optimizer's param groups: the model's hyperparameters, this rank's
        1-D views as 'params'.  Changing a hyperparameter (on every rank) takes effect."""
        return self.optimizer.param_groups

    def grad_buffers(self) -> Any:
        """Per param, its grad's place in the flat buffers, in the params' structure
        (write grads there and pass them to step(): no copy).  After a step, this
        rank's shard of them holds the sum of the ranks' grads (the kernel divides
        by the number of ranks with average=True).

        Returns
        -------
        list, dict or list of lists/dicts
            One array per param, shaped like it, in the params' structure.
        """
        return self.model.unflatten(self._grad_views)

    @shared_docs
    def step(self, grads: Grads) -> None:
        """Reduce-scatter this rank's grads, step the shard, all-gather the params.

        Every rank calls it together.

        Parameters
        ----------
        grads : list, dict or list of lists/dicts
            One array per param, in the params' structure.

        Raises
        ------
        {{grad_errors}}
        """
        flat = self.model.flatten(grads)
        for g, view in zip(flat, self._grad_views):
            if g is not view:
                np.copyto(view, g)
        divisor = self.size if self.average else 1
        if self.size > 1:
            blocking(self.timeout, "the reduce-scatter of ZeroRedundancyOptimizer.step", self.comm,
                     self._reduce)
        fused_step(self.optimizer, self._optimizer_grads, divisor)
        if self.size > 1:
            blocking(self.timeout, "the all-gather of ZeroRedundancyOptimizer.step", self.comm, self._gather)

    def _reduce(self) -> None:
        for total in self._sums:
            total.reduce()

    def _gather(self) -> None:
        for gather in self._gathers:
            gather.run()

    def local_state_nbytes(self) -> int:
        """Bytes of optimizer state held on this rank: the per-element state arrays
        (moments, accumulators), not the per-tensor step counters and scalars
        (NAdam's mu_product, of which every piece of a tensor holds a copy).  Summed over the
        ranks, it equals the unsharded optimizer's.

        Returns
        -------
        int
            The bytes of this rank's state arrays.
        """
        return sum(v.nbytes for s in self.optimizer.state.values() for k, v in s.items()
                   if k != "step" and k not in self._scalar_slots and isinstance(v, np.ndarray))

    # ---- checkpoints ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The full state, gathered from every rank, in the layout of the unsharded
        optimizer over the whole params (torch's layout; loads into a plain
        optimizer).  A collective: every rank calls it and gets the same dict.

        Returns
        -------
        dict
            ``{"state", "param_groups", "step_count"}`` over the whole params.
        """
        local = self.optimizer.state_dict()
        pieces: dict[int, list[tuple[int, int, dict[str, Any]]]] = {}  # param index -> [(lo, hi, state entry)]
        for j, entry in local["state"].items():
            if self._pieces[j] is not None:
                i, lo, hi = self._pieces[j]
                pieces.setdefault(i, []).append((lo, hi, entry))
        everyone = allgather_object(pieces, self.comm, self.timeout, "ZeroRedundancyOptimizer.state_dict")
        state: dict[int, dict[str, Any]] = {}
        for i, p in enumerate(self.model.arrays):
            parts = sorted((part for rank_pieces in everyone for part in rank_pieces.get(i, ())),
                           key=lambda part: part[0])
            if parts:
                state[i] = _joined_state(parts, p, self.model.keys[i], self._scalar_slots)
        groups: list[dict[str, Any]] = []
        first = 0
        for saved, count in zip(local["param_groups"], self.model.group_sizes):
            group = {k: v for k, v in saved.items() if k not in ("params", "param_names")}
            group["params"] = list(range(first, first + count))
            if self.model.named:
                group["param_names"] = self.model.keys[first:first + count]
            groups.append(group)
            first += count
        return {"state": state, "param_groups": groups, "step_count": local["step_count"]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a full state (from state_dict(), or a plain optimizer's over the same
        params) and keep this rank's shard.  Every rank loads the same dict; no
        message is sent.

        Parameters
        ----------
        state_dict : dict
            A full state over the whole params.

        Raises
        ------
        ValueError
            A state that does not match the model (checked like
            Optimizer.load_state_dict: nothing changes on error).
        """
        if not isinstance(state_dict, Mapping) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.model.group_sizes):
            raise ValueError(f"loaded state dict has {len(saved_groups)} param groups, "
                             f"the model has {len(self.model.group_sizes)}")
        model_index: dict[Any, int] = {}
        first = 0  # saved param index -> model flat index, by position in the groups
        for gi, (saved, count) in enumerate(zip(saved_groups, self.model.group_sizes)):
            if len(saved["params"]) != count:
                raise ValueError(f"loaded param_groups[{gi}] has {len(saved['params'])} params, "
                                 f"the model's has {count}")
            for j, saved_index in enumerate(saved["params"]):
                model_index[saved_index] = first + j
            first += count
        full: dict[int, Mapping[str, Any]] = {}
        for saved_index, entry in state_dict["state"].items():
            if saved_index not in model_index:
                raise ValueError(f"loaded state has an entry for param {saved_index!r}, "
                                 f"which no loaded param group lists")
            full[model_index[saved_index]] = entry
        shard_state: dict[int, dict[str, Any]] = {}
        for j, piece in enumerate(self._pieces):
            if piece is None or piece[0] not in full:
                continue
            i, lo, hi = piece
            p, key = self.model.arrays[i], self.model.keys[i]
            sliced: dict[str, Any] = {}
            for name, value in full[i].items():
                array = None if name == "step" else _to_numpy(value)
                if array is None:
                    sliced[name] = value
                    continue
                if name in self._scalar_slots:  # every piece its own copy of the tensor's scalar
                    sliced[name] = array.copy()
                    continue
                if array.shape != p.shape:
                    raise ValueError(f"loaded state[{key!r}][{name!r}] has shape {array.shape} "
                                     f"but params[{key!r}] has shape {p.shape}")
                sliced[name] = array.reshape(-1)[lo:hi]
            shard_state[j] = sliced
        shard_groups: list[dict[str, Any]] = []
        start = 0
        for saved, group in zip(saved_groups, self.optimizer.param_groups):
            count = len(group["params"])
            shard_groups.append({**{k: v for k, v in saved.items() if k not in ("params", "param_names")},
                                 "params": list(range(start, start + count))})
            start += count
        self.optimizer.load_state_dict({"state": shard_state, "param_groups": shard_groups,
                                        "step_count": state_dict.get("step_count", 0)})


def _joined_state(parts: Sequence[tuple[int, int, Mapping[str, Any]]], param: FloatArray,
                  key: object, scalars: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One param's state from its pieces' states [(lo, hi, entry)], sorted by lo; a
    per-tensor scalar (a name in `scalars`) is the first piece's copy (all are equal)."""
    covered = sum(hi - lo for lo, hi, _ in parts)
    if covered != param.size:  # pragma: no cover - every piece of a param steps together
        raise RuntimeError(f"the shards hold state for {covered} of the {param.size} elements of params[{key!r}]")
    joined: dict[str, Any] = {}
    for name, value in parts[0][2].items():
        if name in scalars:
            copies = [entry[name] for _, _, entry in parts]
            if not all(np.array_equal(c, value) and c.dtype == value.dtype for c in copies):  # pragma: no cover
                raise RuntimeError(f"the pieces of params[{key!r}] hold different {name!r}: {copies}")
            joined[name] = value
        elif isinstance(value, np.ndarray) and name != "step":
            joined[name] = np.concatenate([entry[name] for _, _, entry in parts]).reshape(param.shape)
        else:
            joined[name] = value
    return joined
