"""The types of fastoptim's public API, for annotations in user code.

>>> import numpy as np
>>> from fastoptim.typing import FloatArray, LRSchedule
>>> def halve(t: int) -> float:
...     return 0.1 / 2 ** (t // 100)
>>> schedule: LRSchedule = halve
>>> params: list[FloatArray] = [np.zeros(3, np.float32)]
"""
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias, Union

import numpy as np
import numpy.typing as npt

__all__ = ["FloatArray", "LRSchedule", "LR", "ParamGroup", "Params", "Grads", "Closure", "ArrayTree", "Pacing"]

#: A param, grad or state array: float32 or float64 (16-bit floats where a function says so).
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]


class LRSchedule(Protocol):
    """A learning-rate schedule: the lr at step t (0 for the first step).

    Every schedule of fastoptim.schedules is one, and so is any function or
    callable object taking the step and returning a float.
    """

    def __call__(self, t: int, /) -> float: ...


#: An optimizer's lr: a number, or a schedule evaluated at every step.
LR: TypeAlias = Union[float, LRSchedule]

#: A param group: {'params': arrays (a list, or a dict name -> array), hyperparameter overrides...}.
ParamGroup: TypeAlias = Mapping[str, Any]

#: What an optimizer takes: a list of arrays, a dict name -> array, or a list of param groups.
Params: TypeAlias = Union[Iterable[FloatArray], Mapping[str, FloatArray], Sequence[ParamGroup]]

#: What step() takes, in the structure the params were given in: a list, a dict name -> grad,
#: or (param groups) a flat list or one list or dict per group.  None skips a param.
Grads: TypeAlias = Union[Sequence[Union[FloatArray, None]], Mapping[str, Union[FloatArray, None]],
                         Sequence[Union[Sequence[Union[FloatArray, None]], Mapping[str, Union[FloatArray, None]]]]]


#: Arrays in any structure fastoptim.train walks: an array, a list/tuple or a dict of them, nested;
#: None is skipped.
ArrayTree: TypeAlias = Union[npt.NDArray[Any], None, list[Any], tuple[Any, ...], Mapping[Any, Any]]


class Pacing(Protocol):
    """A curriculum's pacing: the fraction in (0, 1] of the ordered samples epoch e sees.

    fastoptim.train's linear_pacing, root_pacing and step_pacing make them.
    """

    def __call__(self, epoch: int, /) -> float: ...


class Closure(Protocol):
    """torch.optim's closure: reevaluates the model and returns the loss (fastoptim.torch)."""

    def __call__(self) -> Any: ...
