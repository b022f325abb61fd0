"""Hogwild!: lock-free parallel SGD for sparse linear models, as scikit-learn estimators.

HogwildSGDClassifier and HogwildSGDRegressor take SGDClassifier's and
SGDRegressor's parameter names and defaults (L2 penalty only) plus `n_threads`.
Each epoch is one nogil OpenMP region: the threads claim slices of a shuffled
sample order in turn and update the shared weights without locks, touching
only the nonzeros of their rows (Niu, Recht, Re and Wright, 2011).

Results are bit-reproducible with n_threads=1 and a fixed random_state.  With
more threads the updates race by design (a thread may read weights another is
writing, and a write may occasionally be lost), so results vary slightly from
run to run; on sparse data such collisions are rare and accuracy is unaffected.
On dense data every update writes every weight, so threads contend for the
same cache lines: there one thread is usually as fast as several.  Averaged SGD
(`average`) keeps scikit-learn's lazy form, in which a weight update lost to a
race is never corrected in the average: with several threads use it on sparse
data with many features, where two threads rarely write the same weight at once.

fit reads X once per epoch and nothing more: it finds NaN and infinities in X
during the first epoch (each stored value enters a dot product) and then raises
scikit-learn's error, and the next epoch's shuffle and step-size plan are done
by the threads while the current epoch runs.  partial_fit checks X before it
writes anything.

Needs scikit-learn (>= 1.6) and SciPy: pip install 'fastoptim[hogwild]'.

The package: _estimators (the two estimators and the epoch loop they share),
_checks (their argument checks), _kernel (the Cython epoch kernel; its C is in
csrc/hogwild/).
"""
from ._estimators import HogwildSGDClassifier, HogwildSGDRegressor

__all__ = ["HogwildSGDClassifier", "HogwildSGDRegressor"]
