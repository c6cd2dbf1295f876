"""Limits checked before any work: thread counts the machine and OpenMP can run, and
integers within the range the compiled core takes. Each used to crash or end in a
cast error (issue 16): 100000 threads segfaulted, layers = 2**32 + 1 gave
"Unable to cast Python instance". The command-line cases are in test_cli.py."""
from __future__ import annotations

import pytest

import layerparallel as lp
from layerparallel import _core

def test_thread_limit_is_generous_and_finite():
    limit = _core.thread_limit()
    assert 1 <= limit <= 64 * _core.max_threads()
    assert limit < 40000  # where libgomp stops being able to create threads


@pytest.mark.parametrize("n", [-1, "limit+1", 70000, 2**40, 2.0, True])
def test_set_num_threads_refuses_what_cannot_run(n):
    if n == "limit+1":
        n = _core.thread_limit() + 1
    with pytest.raises(ValueError, match="number of threads"):
        lp.set_num_threads(n)
    assert lp.num_threads() >= 1  # unchanged and usable


def test_set_num_threads_takes_the_limit():
    try:
        lp.set_num_threads(_core.thread_limit())
        assert lp.num_threads() == _core.thread_limit()
    finally:
        lp.set_num_threads(0)


def test_compiled_core_refuses_threads_beyond_the_limit():
    with pytest.raises(ValueError, match="number of threads"):
        _core.set_num_threads(_core.thread_limit() + 1)


def test_mgrit_threads_beyond_the_limit_are_one_clear_error():
    model = lp.ResNet(n_features=2, n_classes=5, width=8, layers=8, T=1.0, seed=0)
    data = lp.generate_peaks(n_train=20, n_val=5, seed=0)
    with pytest.raises(ValueError, match="MgritOptions.threads"):
        solver = lp.Solver(model, mode="exact", mgrit=lp.MgritOptions(cfactor=2, threads=_core.thread_limit() + 1))
        solver(model.theta, data.train_x, data.train_y)


@pytest.mark.parametrize("key", ["cfactor", "max_levels", "max_iter", "min_coarse"])
def test_ode_options_beyond_32_bits_are_one_clear_error(key):
    with pytest.raises(ValueError, match=f"mgrit option {key} must be at most 2147483647"):
        lp.solve_ode(lambda u, t0, t1, level: u, [1.0], T=1.0, N=8, **{key: 2**40})
