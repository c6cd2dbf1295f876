"""MGRIT for a Python step function (layerparallel.ode over _core.ode_solve):
exactness against serial stepping, finite termination, warm start, the
two-level convergence theory, errors raised at the boundary and from the step
function, and the conformance check."""
from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from layerparallel import _core, ode

LAM = -1.0


def euler(u, t0, t1, level):
    """Forward Euler for u' = LAM u (coarse levels: the same with the larger step)."""
    return u + (t1 - t0) * LAM * u


def cubic(u, t0, t1, level):
    """Forward Euler for the nonlinear, time-dependent u' = -u^3 + sin(t), elementwise."""
    return u + (t1 - t0) * (-u ** 3 + np.sin(t0))


U3 = np.array([1.0, -0.5, 0.25])


# ----------------------------------------------------------------- exactness


def test_one_level_is_serial_exactly():
    ref = ode.serial(euler, [1.0], T=2.0, N=40)
    res = ode.solve(euler, [1.0], T=2.0, N=40, max_levels=1)
    assert res.levels == 1
    assert res.converged
    np.testing.assert_array_equal(res.states, ref)
    assert res.steps_per_level == [40]


def test_serial_is_forward_substitution():
    t = np.linspace(0.0, 1.0, 11)
    got = ode.serial(cubic, U3, t)
    want = [U3]
    for i in range(10):
        want.append(cubic(want[-1], t[i], t[i + 1], 0))
    np.testing.assert_array_equal(got, np.array(want))
    # T and N give the uniform grid on [0, T].
    np.testing.assert_array_equal(ode.serial(cubic, U3, T=1.0, N=10), got)


@pytest.mark.parametrize("N", [16, 30, 64])
@pytest.mark.parametrize("cfactor", [2, 4])
def test_converged_solve_equals_serial(N, cfactor):
    ref = ode.serial(euler, [1.0], T=2.0, N=N)
    res = ode.solve(euler, [1.0], T=2.0, N=N, cfactor=cfactor, tol=1e-13, max_iter=60)
    assert res.converged
    assert res.levels >= 2
    assert res.states.shape == (N + 1, 1)
    assert np.max(np.abs(res.states - ref)) <= 1e-10
    assert res.iterations == len(res.residuals) - 1 == len(res.factors)
    assert res.total_steps == sum(res.steps_per_level)
    assert len(res.steps_per_level) == res.levels
    np.testing.assert_array_equal(res.t, np.linspace(0.0, 2.0, N + 1))


def test_nonlinear_vector_ode_converges_to_serial():
    t = np.linspace(0.0, 3.0, 97)
    ref = ode.serial(cubic, U3, t)
    res = ode.solve(cubic, U3, t, cfactor=4, tol=1e-13, max_iter=60)
    assert res.converged
    assert np.max(np.abs(res.states - ref)) <= 1e-10


@pytest.mark.parametrize("options", [
    dict(cycle="F"),
    dict(relax="FCF"),
    dict(relax=["F", "FCFCF"], cfactor_fine=4, cfactor=2),
    dict(fmg=True),
    dict(skip_first_down=True),
    dict(store="cpoints"),
    dict(min_coarse=8, max_levels=3),
])
def test_options_pass_through_and_converge(options):
    t = np.linspace(0.0, 3.0, 61)
    ref = ode.serial(cubic, U3, t)
    res = ode.solve(cubic, U3, t, tol=1e-13, max_iter=60, **options)
    assert res.converged
    assert np.max(np.abs(res.states - ref)) <= 1e-10


def test_nonuniform_grid_and_the_times_passed_to_step():
    rng = np.random.default_rng(3)
    t = np.concatenate([[0.0], np.cumsum(rng.uniform(0.01, 0.05, size=48))])
    calls = []

    def step(u, t0, t1, level):
        calls.append((t0, t1, level))
        return cubic(u, t0, t1, level)

    ref = ode.serial(cubic, U3, t)
    res = ode.solve(step, U3, t, cfactor=4, tol=1e-13, max_iter=60)
    assert np.max(np.abs(res.states - ref)) <= 1e-10
    # Every call is counted, and steps from grid point i0 to i1 > i0; level 0
    # steps between neighbours, level l spans 4^l fine steps.
    assert len(calls) == res.total_steps
    index = {float(x): i for i, x in enumerate(t)}
    per_level = [0] * res.levels
    for t0, t1, level in calls:
        i0, i1 = index[t0], index[t1]
        assert i1 - i0 == 4 ** level
        per_level[level] += 1
    assert per_level == res.steps_per_level


def test_step_may_return_a_list_or_ints():
    ref = ode.serial(euler, [1.0, 2.0], T=1.0, N=12)
    res = ode.solve(lambda u, t0, t1, lv: list(euler(u, t0, t1, lv)), [1.0, 2.0], T=1.0, N=12, tol=1e-13)
    assert np.max(np.abs(res.states - ref)) <= 1e-12
    const = ode.serial(lambda u, t0, t1, lv: np.array([3, 4]), [1, 2], T=1.0, N=3)
    np.testing.assert_array_equal(const, [[1, 2], [3, 4], [3, 4], [3, 4]])


# ----------------------------------------------------------------- iteration properties


@pytest.mark.parametrize("k", [1, 2, 3])
def test_finite_termination_with_fixed_iterations(k):
    # Two levels, F-relaxation: after k cycles the points 0..(k+1)m-1 are exact
    # (initial F-sweep: the first interval; each cycle: one more C-point and its F-points).
    N, m = 32, 4
    ref = ode.serial(euler, [1.0], T=4.0, N=N)
    res = ode.solve(euler, [1.0], T=4.0, N=N, max_levels=2, cfactor=m, relax="F", iterations=k)
    assert res.iterations == k and len(res.residuals) == k + 1
    err = np.abs(res.states - ref)[:, 0]
    assert np.max(err[:(k + 1) * m]) <= 1e-14
    assert err[(k + 1) * m] > 1e-8  # and not further: the property is sharp


def test_zero_iterations_is_the_f_relaxed_guess():
    res = ode.solve(euler, [1.0], T=1.0, N=8, cfactor=2, max_levels=2, iterations=0)
    assert res.iterations == 0 and len(res.residuals) == 1 and res.factors == []
    # Default guess u0 at every C-point, F-points one Euler step after each.
    expected = np.where(np.arange(9) % 2 == 0, 1.0, 1.0 + 0.125 * LAM)
    np.testing.assert_allclose(res.states[:, 0], expected, rtol=0, atol=1e-15)


def test_warm_start_from_serial_solution_has_zero_residual():
    t = np.linspace(0.0, 2.0, 41)
    ref = ode.serial(cubic, U3, t)
    res = ode.solve(cubic, U3, t, initial=ref, tol=1e-12)
    assert res.residuals[0] <= 1e-14
    assert res.iterations == 0
    assert res.converged
    assert np.max(np.abs(res.states - ref)) <= 1e-14


def test_warm_start_is_used():
    # A nearby trajectory needs fewer cycles than the default guess.
    t = np.linspace(0.0, 2.0, 65)
    ref = ode.serial(cubic, U3, t)
    cold = ode.solve(cubic, U3, t, tol=1e-12)
    warm = ode.solve(cubic, U3, t, tol=1e-12, initial=ref + 1e-6)
    assert warm.converged and cold.converged
    assert warm.iterations < cold.iterations
    assert warm.residuals[0] < 1e-4


def test_convergence_factor_matches_two_level_theory():
    # u' = LAM u, forward Euler a = 1 + h LAM, coarse a_c = 1 + m h LAM; two-level
    # F-relaxation applies E_F = (a^m - a_c)(I - a_c L)^{-1} L to C-point errors
    # (docs/algorithm.md section 3): measured factors below 1 and below |E_F|_2, the first
    # one close to it.
    N, m, T = 64, 4, 4.0
    res = ode.solve(euler, [1.0], T=T, N=N, max_levels=2, cfactor=m, relax="F", iterations=4)
    h = T / N
    a, ac, nc = 1 + h * LAM, 1 + m * h * LAM, N // m
    L = np.diag(np.ones(nc - 1), -1)
    E = (a ** m - ac) * np.linalg.solve(np.eye(nc) - ac * L, L)
    norm = np.linalg.norm(E, 2)
    f = np.array(res.factors)
    assert np.all(f < 1.0)
    assert np.all(f <= norm * (1 + 1e-9))
    assert f[0] >= 0.85 * norm


def test_converged_flag_with_fixed_iterations():
    res = ode.solve(euler, [1.0], T=2.0, N=32, iterations=30, tol=1e-10)
    assert res.converged and res.residuals[-1] <= 1e-10
    res = ode.solve(euler, [1.0], T=2.0, N=32, iterations=1, tol=1e-14)
    assert not res.converged


# ----------------------------------------------------------------- errors


class StepError(Exception):
    pass


def test_exception_in_step_propagates_unchanged():
    def bad(u, t0, t1, level):
        if t0 >= 0.5:
            raise StepError("boom at half time")
        return euler(u, t0, t1, level)

    with pytest.raises(StepError, match="boom at half time") as info:
        ode.solve(bad, [1.0], T=1.0, N=16)
    if sys.version_info >= (3, 11):
        assert any("t0=" in note and "level=" in note for note in info.value.__notes__)
    with pytest.raises(StepError, match="boom at half time"):
        ode.serial(bad, [1.0], T=1.0, N=16)


def test_exception_on_a_coarse_level_propagates():
    def bad(u, t0, t1, level):
        if level >= 1:
            raise StepError("no coarse steps here")
        return euler(u, t0, t1, level)

    with pytest.raises(StepError, match="no coarse steps here"):
        ode.solve(bad, [1.0], T=1.0, N=16)
    # The solver is reusable after an error (no leaked state, GIL released properly).
    assert ode.solve(euler, [1.0], T=1.0, N=16, tol=1e-12).converged


@pytest.mark.parametrize("result, match", [
    (lambda u: np.zeros(3), r"returned shape \(3,\) for a state of size 4 \(t0=0.0, t1=0.0625, level=0\)"),
    (lambda u: np.zeros((4, 1)), r"returned shape \(4, 1\) for a state of size 4"),
    (lambda u: 1.0, r"returned shape \(\) for a state of size 4"),
    (lambda u: None, r"returned None"),
    (lambda u: u * np.nan, r"non-finite value \(nan at index 0\)"),
    (lambda u: u * 1j, r"complex"),
    (lambda u: np.array(["a"] * 4), r"dtype <U1"),
    (lambda u: {"u": u}, r"dtype object"),
])
def test_bad_step_result_is_a_value_error(result, match):
    with pytest.raises(ValueError, match=match):
        ode.solve(lambda u, t0, t1, level: result(u), np.ones(4), T=1.0, N=16)
    with pytest.raises(ValueError, match=match):
        ode.serial(lambda u, t0, t1, level: result(u), np.ones(4), T=1.0, N=16)


@pytest.mark.parametrize("t, match", [
    ([0.0, 0.5, 0.5, 1.0], r"t \(the time grid\) must be strictly increasing, but t\[2\] = 0.5 <= t\[1\] = 0.5"),
    ([0.0, 1.0, 0.5], r"t \(the time grid\) must be strictly increasing"),
    ([0.0], r"t \(the time grid\) must hold at least 2 points"),
    ([[0.0, 1.0]], r"t \(the time grid\) must have shape"),
    ([0.0, np.inf], r"t \(the time grid\) must be finite"),
    (["a", "b"], r"t \(the time grid\)"),
])
def test_bad_time_grid(t, match):
    with pytest.raises(ValueError, match=match):
        ode.solve(euler, [1.0], t)
    with pytest.raises(ValueError, match=match):
        ode.serial(euler, [1.0], t)
    with pytest.raises(ValueError, match=match):
        ode.check_step(euler, [1.0], t)


@pytest.mark.parametrize("kwargs, match", [
    (dict(), r"give the time grid t, or both T"),
    (dict(T=1.0), r"give the time grid t, or both T"),
    (dict(N=4), r"give the time grid t, or both T"),
    (dict(t=[0, 1], T=1.0, N=4), r"either the time grid t or T and N"),
    (dict(T=1.0, N=0), r"N \(the number of time steps\)"),
    (dict(T=1.0, N=2.5), r"N \(the number of time steps\)"),
    (dict(T=-1.0, N=4), r"T \(the final time\)"),
    (dict(T=float("nan"), N=4), r"T \(the final time\)"),
])
def test_grid_arguments(kwargs, match):
    for fn in (ode.solve, ode.serial, ode.check_step):
        with pytest.raises(ValueError, match=match):
            fn(euler, [1.0], **kwargs)


@pytest.mark.parametrize("u0, match", [
    ([], r"u0 \(the initial state\) must hold at least one value"),
    ([[1.0, 2.0]], r"u0 \(the initial state\) must have shape"),
    ([1.0, np.nan], r"u0 \(the initial state\) must be finite"),
    ([1j], r"u0 \(the initial state\) must hold real numbers"),
])
def test_bad_initial_state(u0, match):
    with pytest.raises(ValueError, match=match):
        ode.solve(euler, u0, T=1.0, N=4)
    with pytest.raises(ValueError, match=match):
        ode.serial(euler, u0, T=1.0, N=4)


def test_bad_options_and_arguments():
    with pytest.raises(ValueError, match="unknown mgrit option 'cfactr'"):
        ode.solve(euler, [1.0], T=1.0, N=8, cfactr=2)
    with pytest.raises(ValueError, match="cfactor"):
        ode.solve(euler, [1.0], T=1.0, N=8, cfactor=1)
    with pytest.raises(ValueError, match="mgrit option tol must be a number"):
        ode.solve(euler, [1.0], T=1.0, N=8, tol="small")
    with pytest.raises(ValueError, match="threads must be 0 or 1"):
        ode.solve(euler, [1.0], T=1.0, N=8, threads=2)
    assert ode.solve(euler, [1.0], T=1.0, N=8, threads=1, tol=1e-12).converged
    with pytest.raises(ValueError, match=r"initial \(the warm-start trajectory\) must have shape \(9, 1\)"):
        ode.solve(euler, [1.0], T=1.0, N=8, initial=np.zeros((8, 1)))
    with pytest.raises(ValueError, match=r"initial \(the warm-start trajectory\) must be finite"):
        ode.solve(euler, [1.0], T=1.0, N=8, initial=np.full((9, 1), np.nan))
    with pytest.raises(ValueError, match="iterations must be >= 0"):
        ode.solve(euler, [1.0], T=1.0, N=8, iterations=-1)
    with pytest.raises(ValueError, match="iterations must be None"):
        ode.solve(euler, [1.0], T=1.0, N=8, iterations=2.0)
    with pytest.raises(TypeError, match="step must be callable"):
        ode.solve("euler", [1.0], T=1.0, N=8)
    with pytest.raises(TypeError, match="step must be callable"):
        _core.ode_serial(None, [1.0], [0.0, 1.0])
    with pytest.raises(TypeError, match="step must be callable"):
        ode.check_step(3, [1.0], T=1.0, N=8)


# ----------------------------------------------------------------- conformance check


def test_check_step_accepts_good_steps():
    assert ode.check_step(euler, [1.0], T=1.0, N=16) == []
    assert ode.check_step(cubic, U3, np.linspace(0.0, 2.0, 9)) == []
    assert ode.check_step(cubic, U3, T=1.0, N=1) == []  # no coarse interval to try
    # Stiff implicit Euler: far from the identity at dt, consistent as dt -> 0.
    assert ode.check_step(lambda u, t0, t1, lv: u / (1 + 1e4 * (t1 - t0)), U3, T=1.0, N=10) == []
    # u0 a fixed point: nothing moves, nothing to flag.
    assert ode.check_step(lambda u, t0, t1, lv: u - (t1 - t0) * u, [0.0, 0.0], T=1.0, N=4) == []
    assert ode.check_step(euler, [1.0], T=1.0, N=16, raise_on_error=True) == []


def _in_place(u, t0, t1, level):
    u += (t1 - t0) * LAM * u
    return u.copy()


def _aliasing(u, t0, t1, level):
    u += (t1 - t0) * LAM * u
    return u


def _coarse_wrong_shape(u, t0, t1, level):
    return euler(u, t0, t1, level) if level == 0 else euler(u, t0, t1, level)[:-1]


def _late_nan(u, t0, t1, level):
    return euler(u, t0, t1, level) * (np.nan if t0 > 0.4 else 1.0)


def _noisy(u, t0, t1, level):
    return euler(u, t0, t1, level) + 1e-6 * np.random.default_rng().normal(size=u.shape)


def _raises_on_zero_interval(u, t0, t1, level):
    n_sub = int(np.ceil(1e-3 / (t1 - t0)))
    return euler(u, t0, t1, level) * n_sub / n_sub


@pytest.mark.parametrize("step, expected", [
    (_in_place, [r"step\(u, t0=0.0, t1=0.0625, level=0\) modifies its input u in place"]),
    (_aliasing, [r"modifies its input u in place", r"returns its input array"]),
    (lambda u, t0, t1, lv: u[:2], [r"returns its input array \(or a view of it\)",
                                   r"returns shape \(2,\) for a state of shape \(3,\)"]),
    (lambda u, t0, t1, lv: np.zeros(4), [r"returns shape \(4,\) for a state of shape \(3,\)"]),
    (_coarse_wrong_shape, [r"step\(u, t0=0.0, t1=0.125, level=1\) returns shape \(2,\)"]),
    (_late_nan, [r"t0=0.5, t1=0.5625, level=0\) returns non-finite values \(nan at index 0\)"]),
    (lambda u, t0, t1, lv: u * 1j, [r"returns complex values"]),
    (lambda u, t0, t1, lv: None, [r"returns None instead of the new state"]),
    (lambda u, t0, t1, lv: "u", [r"returns a str of dtype <U1, not an array of real numbers"]),
    (lambda u, t0, t1, lv: 1 / 0, [r"step\(u, t0=0.0, t1=0.0625, level=0\) raised ZeroDivisionError: "
                                   r"division by zero"]),
    (_noisy, [r"step is not deterministic: two calls .* differ by up to", r"zero-length interval"]),
    (lambda u, t0, t1, lv: euler(u, t0, t1, lv) + 1.0,
     [r"over a zero-length interval does not return u \(max difference 1\)",
      r"does not reduce to the identity as t1 -> t0 \(consistency\)"]),
    (lambda u, t0, t1, lv: u + np.sqrt(t1 - t0), [r"does not reduce to the identity"]),
    (_raises_on_zero_interval, [r"step\(u, t0=0.0, t1=0.0, level=0\) raised ZeroDivisionError"]),
])
def test_check_step_catches(step, expected):
    problems = ode.check_step(step, U3, T=1.0, N=16)
    assert len(problems) == len(expected), problems
    for pattern, problem in zip(expected, problems):
        assert re.search(pattern, problem), (pattern, problem)
    with pytest.raises(ValueError, match="the step function does not conform") as info:
        ode.check_step(step, U3, T=1.0, N=16, raise_on_error=True)
    assert all(re.search(pattern, str(info.value)) for pattern in expected)


def test_check_step_does_not_swallow_keyboard_interrupt():
    def interrupted(u, t0, t1, level):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ode.check_step(interrupted, U3, T=1.0, N=4)


def test_keyboard_interrupt_in_step_propagates():
    def interrupted(u, t0, t1, level):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ode.solve(interrupted, [1.0], T=1.0, N=8)


def test_solves_from_several_python_threads():
    # The engine releases the GIL and every step call re-acquires it: concurrent
    # solves from Python threads interleave safely and give the serial answer.
    import threading

    t = np.linspace(0.0, 2.0, 129)
    ref = ode.serial(cubic, U3, t)
    out: list = [None] * 4

    def work(k):
        out[k] = ode.solve(cubic, U3, t, cfactor=2 + k % 2, tol=1e-13).states

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for states in out:
        assert states is not None and np.max(np.abs(states - ref)) <= 1e-10
