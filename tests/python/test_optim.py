"""Tests of layerparallel.optim (LBFGS, GradientDescent, Adam)."""
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.optimize as so

import layerparallel.optim as optim_module
from optim_problems import quadratic
from layerparallel.optim import (LBFGS, Adam, GradientDescent, StepResult,
                                 make_optimizer, minibatches)


def rosen(x):
    return float(so.rosen(x)), so.rosen_der(x)


def run(opt, fun, x0, gtol=1e-8, max_iter=5000):
    """Minimal training loop: returns (x, f, g, iterations, evaluations)."""
    x = np.array(x0, dtype=float)
    f, g = fun(x)
    it, ev = 0, 1
    while np.linalg.norm(g) > gtol and it < max_iter:
        r = opt.step(fun, x, f, g)
        assert isinstance(r, StepResult)
        assert r.accepted, f"line search failed at iteration {it}"
        it += 1
        ev += r.trials
        x, f, g = r.x, r.f, r.g
    return x, f, g, it, ev


# ----------------------------------------------------------------------------
# LBFGS
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("x0", [
    np.array([-1.2, 1.0]),
    np.zeros(2),
    np.full(10, -1.0),
    np.linspace(-2.0, 2.0, 10),
])
def test_lbfgs_rosenbrock_matches_scipy(x0):
    x, f, g, it, ev = run(LBFGS(memory=10), rosen, x0, gtol=1e-8)
    assert np.linalg.norm(g) <= 1e-8
    assert np.max(np.abs(x - 1.0)) < 1e-8
    assert f < 1e-16
    res = so.minimize(so.rosen, x0, jac=so.rosen_der, method="L-BFGS-B",
                      options=dict(maxcor=10, gtol=1e-10, ftol=0.0, maxiter=10000))
    assert res.fun < 1e-16
    # same method family: iteration count within a modest factor of scipy's
    assert it <= 1.5 * res.nit + 10, (it, res.nit)
    assert ev <= 1.5 * res.nfev + 10, (ev, res.nfev)


def test_lbfgs_direction_is_the_bfgs_inverse_hessian_product():
    """The two-loop recursion must equal the dense BFGS inverse update
    H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T started from
    gamma I (gamma = s^T y / y^T y of the newest pair) over the last m pairs."""
    fun, A, b, _ = quadratic(n=8, seed=1, cond=30.0)
    m = 3
    opt = LBFGS(memory=m)
    x = np.ones(8)
    f, g = fun(x)
    xs, gs = [x], [g]
    for _ in range(6):
        r = opt.step(fun, x, f, g)
        assert r.accepted
        x, f, g = r.x, r.f, r.g
        xs.append(x)
        gs.append(g)
    assert opt.n_pairs == m
    pairs = [(xs[k + 1] - xs[k], gs[k + 1] - gs[k]) for k in range(len(xs) - m - 1, len(xs) - 1)]
    s_new, y_new = pairs[-1]
    H = (s_new @ y_new) / (y_new @ y_new) * np.eye(8)
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        V = np.eye(8) - rho * np.outer(y, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    gq = np.random.default_rng(5).normal(size=8)
    np.testing.assert_allclose(opt.direction(gq), -H @ gq, rtol=1e-10, atol=1e-12)


def test_lbfgs_first_step_is_steepest_descent_with_step_one():
    fun, A, b, _ = quadratic(n=4, seed=2, cond=2.0)
    x0 = np.linalg.solve(A, b) + 0.01      # |g| < 1: paper's first trial step 1
    f0, g0 = fun(x0)
    assert np.linalg.norm(g0) < 1.0
    calls = []

    def counting(x):
        calls.append(x.copy())
        return fun(x)
    r = LBFGS().step(counting, x0, f0, g0)
    np.testing.assert_allclose(calls[0], x0 - g0, rtol=0, atol=1e-15)
    assert r.accepted and r.step == 1.0 and r.trials == 1
    # large gradient: the first trial has unit length instead
    calls.clear()
    x1 = 100.0 * np.ones(4)
    f1, g1 = fun(x1)
    LBFGS().step(counting, x1, f1, g1)
    assert np.linalg.norm(calls[0] - x1) == pytest.approx(1.0, rel=1e-12)


def test_lbfgs_armijo_failure_leaves_x_unchanged_and_resets():
    # a "gradient" that points the wrong way: -g is an ascent direction
    def good(x):
        return float(x @ x), 2.0 * x

    def wrong(x):
        return float(x @ x), -2.0 * x

    opt = LBFGS(memory=5, max_trials=7)
    x = np.array([0.3, -0.2, 0.1])
    for _ in range(3):                      # build up some memory first
        f, g = good(x)
        r = opt.step(good, x, f, g)
        x = r.x
    x = np.array([0.3, -0.2, 0.1])
    opt2 = LBFGS(memory=5, max_trials=7)
    f, g = wrong(x)
    x_before = x.copy()
    r = opt2.step(wrong, x, f, g)
    assert r.accepted is False
    assert r.trials == 7
    assert r.step == 0.0
    np.testing.assert_array_equal(r.x, x_before)
    np.testing.assert_array_equal(x, x_before)     # input not modified in place
    assert r.f == f
    np.testing.assert_array_equal(r.g, g)
    # failure with memory: memory is reset
    r0 = opt.step(good, np.array([0.5, 0.5, 0.5]))
    assert r0.accepted and opt.n_pairs > 0
    r = opt.step(wrong, np.array([0.5, 0.5, 0.5]))
    assert not r.accepted
    assert opt.n_pairs == 0


def test_lbfgs_non_descent_direction_resets_to_steepest_descent():
    fun, *_ = quadratic(n=3, seed=3, cond=3.0)
    opt = LBFGS()
    x = np.ones(3)
    r = opt.step(fun, x)
    assert opt.n_pairs == 1
    opt.direction = lambda g: g.copy()      # sabotage: ascent direction
    calls = []

    def counting(z):
        calls.append(z.copy())
        return fun(z)
    r2 = opt.step(counting, r.x, r.f, r.g)
    assert r2.accepted
    assert opt.resets == 1
    d = calls[0] - r.x
    cos = d @ (-r.g) / (np.linalg.norm(d) * np.linalg.norm(r.g))
    assert cos == pytest.approx(1.0, abs=1e-12)   # the trial was along -g


def test_lbfgs_curvature_safeguard_skips_bad_pairs():
    # f = -x^2/2 + x^4/4 near 0.1: the accepted step has s^T y < 0
    def fun(x):
        return float(np.sum(-0.5 * x**2 + 0.25 * x**4)), -x + x**3
    opt = LBFGS()
    r = opt.step(fun, np.array([0.1]))
    assert r.accepted
    assert opt.n_pairs == 0 and opt.skipped_pairs == 1


def test_lbfgs_memory_is_bounded_and_reset_clears():
    fun, *_ = quadratic(n=10, seed=4, cond=100.0)
    opt = LBFGS(memory=4)
    x = np.ones(10)
    f, g = fun(x)
    for _ in range(8):
        r = opt.step(fun, x, f, g)
        x, f, g = r.x, r.f, r.g
        assert opt.n_pairs <= 4
    assert opt.n_pairs == 4
    opt.reset()
    assert opt.n_pairs == 0


def test_lbfgs_uses_dot_for_every_inner_product():
    calls = {"n": 0}

    def dot(a, b):
        calls["n"] += 1
        return float(np.dot(a, b))
    opt = LBFGS(memory=5, dot=dot)
    x, f, g, it, _ = run(opt, rosen, np.array([-1.2, 1.0]))
    assert calls["n"] > 5 * it


class _NumpyWithoutReductions:
    """Stands in for ``np`` inside the optim module: every numpy reduction
    that could compute an inner product or a norm behind ``dot``'s back
    raises."""
    FORBIDDEN = {"dot", "vdot", "inner", "linalg", "sum", "einsum", "matmul",
                 "tensordot", "max", "amax", "abs", "sqrt", "square", "mean"}

    def __getattr__(self, name):
        if name in self.FORBIDDEN:
            raise AssertionError(f"optim used np.{name} instead of dot")
        return getattr(np, name)


@pytest.mark.parametrize("make", [
    lambda dot: LBFGS(memory=5, dot=dot),
    lambda dot: GradientDescent(learning_rate=1.0, dot=dot),
])
def test_no_inner_product_bypasses_dot(monkeypatch, make):
    calls = {"n": 0}

    def dot(a, b):
        calls["n"] += 1
        return float(np.dot(a, b))
    monkeypatch.setattr(optim_module, "np", _NumpyWithoutReductions())
    opt = make(dot)
    x = np.array([-1.2, 1.0, 0.5])
    f, g = rosen(x)
    for _ in range(30):
        r = opt.step(rosen, x, f, g)
        x, f, g = r.x, r.f, r.g
    assert f < rosen(np.array([-1.2, 1.0, 0.5]))[0]
    assert calls["n"] >= 30


def test_lbfgs_distributed_dot_reproduces_serial_run():
    """Split x over two simulated ranks (threads).  Each rank runs its own
    LBFGS on its half; ``dot`` all-reduces the partial sums.  If any inner
    product or norm bypassed ``dot`` the ranks would see local values and
    the iterates would differ from the serial run (or the ranks would
    deadlock, caught by the barrier timeout)."""
    n, iters = 6, 25
    x0 = np.linspace(-2.0, 1.5, n)
    cut = [slice(0, 2), slice(2, n)]        # deliberately uneven split

    # serial reference
    opt = LBFGS(memory=4)
    x = x0.copy()
    f, g = rosen(x)
    for _ in range(iters):
        r = opt.step(rosen, x, f, g)
        x, f, g = r.x, r.f, r.g
    x_serial = x

    barrier = threading.Barrier(2, timeout=20)
    slots = [None, None]
    out = [None, None]
    errors = []

    def exchange(rank, value):
        slots[rank] = value
        barrier.wait()
        vals = list(slots)
        barrier.wait()
        return vals

    def worker(rank):
        try:
            def dot(a, b):
                return float(sum(exchange(rank, float(np.dot(a, b)))))

            def fun(xl):
                full = np.concatenate(exchange(rank, xl))
                fv, gv = rosen(full)
                return fv, gv[cut[rank]]
            o = LBFGS(memory=4, dot=dot)
            xl = x0[cut[rank]].copy()
            fl, gl = fun(xl)
            for _ in range(iters):
                r = o.step(fun, xl, fl, gl)
                xl, fl, gl = r.x, r.f, r.g
            out[rank] = xl
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    x_dist = np.concatenate(out)
    np.testing.assert_allclose(x_dist, x_serial, rtol=1e-8, atol=1e-10)
    # and it was a real run, not a trivial one
    assert np.linalg.norm(x_serial - x0) > 0.5


def test_lbfgs_evaluates_when_f_g_missing():
    fun, *_ = quadratic(n=3)
    r = LBFGS().step(fun, np.ones(3))
    assert r.accepted and r.trials >= 2


def test_lbfgs_rejects_bad_arguments():
    with pytest.raises(ValueError):
        LBFGS(memory=0)
    with pytest.raises(ValueError):
        LBFGS(c1=1.5)
    with pytest.raises(ValueError):
        LBFGS(shrink=1.0)
    with pytest.raises(ValueError):
        LBFGS(max_trials=0)
    with pytest.raises(ValueError):
        LBFGS().step(rosen, np.ones((2, 2)))


# ----------------------------------------------------------------------------
# Gradient descent
# ----------------------------------------------------------------------------
def test_gd_line_search_decreases_quadratic_to_minimum():
    fun, A, b, xstar = quadratic(n=6, seed=0, cond=10.0)
    opt = GradientDescent(learning_rate=1.0, c1=1e-4, shrink=0.5, max_trials=30)
    x = np.zeros(6)
    f, g = fun(x)
    prev = f
    for _ in range(400):
        if np.linalg.norm(g) < 1e-6:  # Armijo is limited by f round-off below
            break
        r = opt.step(fun, x, f, g)
        assert r.accepted
        assert r.f <= prev + 1e-4 * r.step * (-(g @ g)) + 1e-15  # Armijo held
        assert r.step <= 1.0
        x, f, g, prev = r.x, r.f, r.g, r.f
    assert np.linalg.norm(g) < 1e-6
    np.testing.assert_allclose(x, xstar, atol=1e-5)


def test_gd_fixed_step_is_really_fixed():
    fun, A, b, xstar = quadratic(n=4, seed=1, cond=4.0)
    L = np.linalg.eigvalsh(A).max()
    opt = GradientDescent(learning_rate=1.0 / L, line_search=False)
    x = np.zeros(4)
    f, g = fun(x)
    r = opt.step(fun, x, f, g)
    np.testing.assert_allclose(r.x, x - g / L, rtol=0, atol=1e-15)
    assert r.trials == 1 and r.step == 1.0 / L
    for _ in range(300):
        r = opt.step(fun, r.x, r.f, r.g)
    np.testing.assert_allclose(r.x, xstar, atol=1e-6)
    # too large a fixed step diverges (no line search rescues it)
    bad = GradientDescent(learning_rate=2.5 / L, line_search=False)
    r = bad.step(fun, np.zeros(4))
    for _ in range(50):
        r = bad.step(fun, r.x, r.f, r.g)
    assert r.f > 1e3


def test_gd_uses_dot_and_fails_on_wrong_gradient():
    calls = {"n": 0}

    def dot(a, b):
        calls["n"] += 1
        return float(np.dot(a, b))

    def wrong(x):
        return float(x @ x), -2.0 * x
    opt = GradientDescent(learning_rate=1.0, max_trials=5, dot=dot)
    x = np.array([1.0, 2.0])
    r = opt.step(wrong, x)
    assert not r.accepted and calls["n"] > 0
    np.testing.assert_array_equal(r.x, [1.0, 2.0])


# ----------------------------------------------------------------------------
# Adam
# ----------------------------------------------------------------------------
def test_adam_first_step_is_lr_times_sign():
    lr = 0.01
    opt = Adam(learning_rate=lr)
    g = np.array([3.0, -1e-3, 250.0, -7.0])
    x = np.zeros(4)
    r = opt.step(None, x, f=1.0, g=g)
    np.testing.assert_allclose(r.x, -lr * np.sign(g), rtol=1e-5)
    assert r.trials == 0 and r.accepted
    # second step, by hand (bias corrections 1 - beta^2)
    g2 = np.array([1.0, 1.0, -1.0, 2.0])
    r2 = opt.step(None, r.x, f=1.0, g=g2)
    m = 0.9 * 0.1 * g + 0.1 * g2
    v = 0.999 * 0.001 * g**2 + 0.001 * g2**2
    expected = r.x - lr * (m / (1 - 0.9**2)) / (np.sqrt(v / (1 - 0.999**2)) + 1e-8)
    np.testing.assert_allclose(r2.x, expected, rtol=1e-12)


def test_adam_decreases_quadratic():
    fun, A, b, xstar = quadratic(n=5, seed=2, cond=10.0)
    opt = Adam(learning_rate=0.05)
    x = np.zeros(5)
    f0 = fun(x)[0]
    for _ in range(3000):
        r = opt.step(fun, x)
        assert r.trials == 1
        x = r.x
    f_final = fun(x)[0]
    f_star = fun(xstar)[0]
    assert f_final < f0
    assert f_final - f_star < 1e-3 * (f0 - f_star)
    opt.reset()
    assert opt.t == 0


def test_minibatches_cover_an_epoch():
    batches = list(minibatches(103, 10, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [10] * 10 + [3]
    allidx = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(allidx), np.arange(103))
    assert not np.array_equal(allidx, np.arange(103))          # shuffled
    again = np.concatenate(list(minibatches(103, 10, 0)))
    np.testing.assert_array_equal(again, np.concatenate(list(minibatches(103, 10, 0))))


# ----------------------------------------------------------------------------
# factory
# ----------------------------------------------------------------------------
def test_make_optimizer():
    cfg = SimpleNamespace(name="lbfgs", memory=17, c1=1e-3, shrink=0.3, max_trials=9,
                          learning_rate=0.1, beta1=0.8, beta2=0.99, eps=1e-7)
    d = lambda a, b: float(np.dot(a, b))  # noqa: E731
    o = make_optimizer(cfg, dot=d)
    assert isinstance(o, LBFGS)
    assert (o.memory, o.c1, o.shrink, o.max_trials) == (17, 1e-3, 0.3, 9)
    assert o.dot is d
    cfg.name = "gd"
    o = make_optimizer(cfg)
    assert isinstance(o, GradientDescent) and o.learning_rate == 0.1 and o.max_trials == 9
    o = make_optimizer({"name": "adam", "learning_rate": 0.1, "beta1": 0.8, "beta2": 0.99, "eps": 1e-7})
    assert isinstance(o, Adam) and (o.learning_rate, o.beta1, o.beta2, o.eps) == (0.1, 0.8, 0.99, 1e-7)
    with pytest.raises(ValueError):
        make_optimizer({"name": "newton"})
