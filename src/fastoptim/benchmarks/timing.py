"""How every benchmark of fastoptim times and reports: calibrated calls timed in
interleaved rounds, medians, ratios of medians from the same run, and the
machine's streaming bandwidth for the roofline."""
import statistics
import time

import numpy as np

from .._config import get_num_threads
from .._registry import BY_NAME, SPECS
from .._ext import bandwidth, runtime


def add_selection_arguments(parser):
    """--optimizers and --threads, as every optimizer benchmark takes them."""
    parser.add_argument("--optimizers", default=",".join(s.name for s in SPECS),
                        help="comma-separated names (default: all)")
    parser.add_argument("--threads", default=None,
                        help="comma-separated thread counts (default: all usable cores; 'all' allowed)")


def selected_optimizers(text):
    """The registry names in '--optimizers', or a SystemExit naming the unknown ones."""
    optimizers = [o.strip() for o in text.split(",")]
    unknown = [o for o in optimizers if o not in BY_NAME]
    if unknown:
        raise SystemExit(f"unknown optimizers {unknown}; choose from {list(BY_NAME)}")
    return optimizers


def parse_sizes(text):
    """'1024,2**20,4096x4096' -> (1024, 1048576, (4096, 4096)): element counts of 1-D params,
    or the shapes of params of 2 dimensions or more (where a rule's factored state runs)."""
    def count(term):
        base, _, exponent = term.strip().partition("**")
        return int(base) ** int(exponent) if exponent else int(term)

    sizes = []
    for part in text.split(","):
        dims = part.strip().split("x")
        sizes.append(count(dims[0]) if len(dims) == 1 else tuple(count(d) for d in dims))
    return tuple(sizes)


def parse_threads(text):
    """'1,all' -> (1, usable cores); None -> the current thread count."""
    if text is None:
        return (get_num_threads(),)
    return tuple(runtime.usable_cores() if t.strip() == "all" else int(t) for t in text.split(","))


def time_calls(fn, calls):
    """Seconds per call of `calls` calls of fn()."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def calibrate(fn, min_seconds):
    """How many calls of fn() take at least min_seconds."""
    calls = 1
    while True:
        t = time_calls(fn, calls)
        if t * calls >= min_seconds or calls >= 1 << 20:
            return calls
        calls = max(calls * 2, int(calls * min_seconds / max(t * calls, 1e-9)) + 1)


def measure_rounds(contenders, rounds, min_seconds):
    """Seconds per call of each contender in each of `rounds` interleaved rounds."""
    calls = {name: calibrate(fn, min_seconds) for name, fn in contenders.items()}
    samples = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            samples[name].append(time_calls(fn, calls[name]))
    return samples


def measure(contenders, rounds, min_seconds):
    """Median seconds per call of each contender, timed in interleaved rounds."""
    return {name: statistics.median(s) for name, s in measure_rounds(contenders, rounds, min_seconds).items()}


# A ratio whose per-round values span more than this factor is flagged as unreliable:
# on a busy machine one contender (torch's thread pool, say) may have been descheduled.
RATIO_SPREAD_LIMIT = 2.0


def ratio_spread(slower, faster):
    """(median, lowest, highest) of the per-round ratios slower[r] / faster[r] of two
    contenders timed in the same rounds (the rounds interleave them, so round r saw
    the same machine state for both)."""
    ratios = [s / f for s, f in zip(slower, faster)]
    return statistics.median(ratios), min(ratios), max(ratios)


def format_ratio(spread):
    """'12.3x' for a steady ratio; '12.3x (4.1-40x)!' when its rounds disagree by more
    than RATIO_SPREAD_LIMIT, so a figure from an oversubscribed run is not read as real."""
    median, low, high = spread
    if high > RATIO_SPREAD_LIMIT * low:
        return f"{median:.3g}x ({low:.2g}-{high:.2g}x)!"
    return f"{median:.3g}x"


def disagreeing(spread):
    """Whether a ratio's rounds disagree by more than RATIO_SPREAD_LIMIT."""
    return spread[2] > RATIO_SPREAD_LIMIT * spread[1]


def measure_on_ranks(comm, turns, rounds, min_seconds, probe_calls=1):
    """Timed turns on the MPI ranks of `comm` (every rank calls this together).

    turns[name](calls) runs `calls` units of work on this rank and returns a tuple of
    counters (work done, bytes sent...).  All ranks take a turn together, between
    barriers; its time is the slowest rank's and its counters the largest.  Each
    contender's calls are calibrated to last about min_seconds (from a probe of
    probe_calls), then contenders take turns in `rounds` rounds, the order rotating
    every round.  Returns {name: [(seconds, *counters) per round]}, the same on every rank.
    """
    from mpi4py import MPI

    def timed(name, calls):
        comm.Barrier()
        start = time.perf_counter()
        counters = turns[name](calls)
        elapsed = comm.allreduce(time.perf_counter() - start, op=MPI.MAX)
        return (elapsed, *[comm.allreduce(c, op=MPI.MAX) for c in counters])
    names = list(turns)
    calls = {name: max(probe_calls, int(probe_calls * min_seconds / max(timed(name, probe_calls)[0], 1e-6)))
             for name in names}
    samples = {name: [] for name in names}
    for r in range(rounds):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            samples[name].append(timed(name, calls[name]))
    return samples


def machine_bandwidth(threads, rounds=5):
    """Bytes per second of a = s * a + b on 2 x 256 MiB float64 arrays (3 streams of 8 bytes)."""
    n = 2**25
    a, b = np.ones(n), np.full(n, 1e-9)
    bandwidth.scale_add_inplace(a, b, 0.5, threads)
    t = min(time_calls(lambda: bandwidth.scale_add_inplace(a, b, 0.5, threads), 1) for _ in range(rounds))
    return 3 * 8 * n / t


def format_time(seconds):
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def size_label(n):
    """2^k for powers of two, else n; a shape (tuple) as 4096x4096."""
    if isinstance(n, tuple):
        return "x".join(map(str, n))
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)
