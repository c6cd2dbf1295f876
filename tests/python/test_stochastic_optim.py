"""Tests of the stochastic optimisers of layerparallel.optim (SGD, Adam with
weight decay), the learning-rate schedules and the optimiser state
(state_dict / load_state_dict).  The comparisons with torch.optim are
skipped without torch."""
import io
import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.optimize as so

from optim_problems import quadratic
from layerparallel.optim import (LBFGS, SGD, Adam, GradientDescent, Schedule,
                                 make_optimizer, make_schedule)


def least_squares(m=40, n=6, seed=0):
    """f(x) = |A x - b|^2 / (2 m) on random data; returns (fun, x0)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(m, n))
    b = rng.normal(size=m)

    def fun(x):
        r = A @ x - b
        return float(r @ r / (2 * m)), A.T @ r / m
    return fun, rng.normal(size=n)


def rosen(x):
    return float(so.rosen(x)), so.rosen_der(x)


# ----------------------------------------------------------------------------
# schedules
# ----------------------------------------------------------------------------
def test_schedule_values_follow_their_formulas():
    const = make_schedule()
    assert isinstance(const, Schedule)
    assert [const(t) for t in (0, 1, 7, 10**6)] == [1.0] * 4

    step = make_schedule("step", step_size=3, gamma=0.5)
    assert [step(t) for t in (0, 1, 2, 3, 5, 6, 8, 9)] == [1, 1, 1, .5, .5, .25, .25, .125]

    cos = make_schedule("cosine", total_steps=10, min_factor=0.2)
    assert cos(0) == 1.0
    assert cos(5) == pytest.approx(0.6, abs=1e-15)
    assert cos(3) == pytest.approx(0.2 + 0.8 * (1 + math.cos(0.3 * math.pi)) / 2, abs=1e-15)
    assert cos(10) == pytest.approx(0.2, abs=1e-15)
    assert cos(11) == cos(1000) == 0.2          # held at min_factor after total_steps
    vals = [cos(t) for t in range(12)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))

    warm = make_schedule("constant", warmup_steps=4)
    assert [warm(t) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]

    wstep = make_schedule("step", warmup_steps=2, step_size=3, gamma=0.1)
    assert [wstep(t) for t in range(9)] == pytest.approx([0.5, 1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01],
                                                         rel=1e-15)

    # the warm-up and the annealing together last total_steps
    wcos = make_schedule("cosine", total_steps=6, warmup_steps=2)
    assert [wcos(t) for t in range(2)] == [0.5, 1.0]
    assert wcos(2) == 1.0
    assert wcos(4) == pytest.approx(0.5, abs=1e-15)
    assert wcos(6) == 0.0 and wcos(7) == 0.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="linear"), "schedule"),
    (dict(name="cosine"), "total_steps"),
    (dict(name="cosine", total_steps=0), "total_steps"),
    (dict(name="cosine", total_steps=5, warmup_steps=5), "total_steps"),
    (dict(name="cosine", total_steps=5, min_factor=-0.1), "min_factor"),
    (dict(name="cosine", total_steps=5, min_factor=1.5), "min_factor"),
    (dict(name="step"), "step_size"),
    (dict(name="step", step_size=0), "step_size"),
    (dict(name="step", step_size=2.5), "step_size"),
    (dict(name="step", step_size=2, gamma=0.0), "gamma"),
    (dict(name="step", step_size=2, gamma=1.5), "gamma"),
    (dict(name="step", step_size=2, gamma=float("nan")), "gamma"),
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(warmup_steps=2.0), "warmup_steps"),
    (dict(warmup_steps=True), "warmup_steps"),
])
def test_schedule_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(**kwargs)


def test_schedule_rejects_negative_steps():
    with pytest.raises(ValueError, match="t must"):
        make_schedule()(-1)


def test_optimisers_follow_their_schedule_and_count_steps():
    sched = make_schedule("step", warmup_steps=2, step_size=2, gamma=0.5)
    fun, x = least_squares()
    for opt in (SGD(learning_rate=0.2, momentum=0.5, schedule=sched),
                Adam(learning_rate=0.2, schedule=sched)):
        assert opt.t == 0 and opt.current_learning_rate == 0.1
        for t in range(8):
            lr = opt.current_learning_rate
            assert lr == 0.2 * sched(t)
            r = opt.step(fun, x)
            assert r.step == lr and opt.t == t + 1
            x = r.x
        opt.reset()
        assert opt.t == 0


# ----------------------------------------------------------------------------
# SGD
# ----------------------------------------------------------------------------
def test_sgd_steps_by_hand():
    lr, mu, wd = 0.1, 0.9, 0.01
    x0 = np.array([1.0, -2.0, 0.5])
    g0 = np.array([0.3, 0.1, -0.2])
    g1 = np.array([-0.1, 0.4, 0.25])

    r = SGD(learning_rate=lr).step(None, x0, 2.0, g0)
    np.testing.assert_allclose(r.x, x0 - lr * g0, rtol=1e-15)
    assert (r.f, r.step, r.trials, r.accepted) == (2.0, lr, 0, True)
    assert r.g is not None and np.array_equal(r.g, g0)

    # heavy ball: buf = g on the first step, then mu buf + g
    opt = SGD(learning_rate=lr, momentum=mu)
    x1 = opt.step(None, x0, 0.0, g0).x
    np.testing.assert_allclose(x1, x0 - lr * g0, rtol=1e-15)
    x2 = opt.step(None, x1, 0.0, g1).x
    np.testing.assert_allclose(x2, x1 - lr * (mu * g0 + g1), rtol=1e-15)

    # Nesterov: d = g + mu buf
    opt = SGD(learning_rate=lr, momentum=mu, nesterov=True)
    x1 = opt.step(None, x0, 0.0, g0).x
    np.testing.assert_allclose(x1, x0 - lr * (g0 + mu * g0), rtol=1e-15)
    x2 = opt.step(None, x1, 0.0, g1).x
    np.testing.assert_allclose(x2, x1 - lr * (g1 + mu * (mu * g0 + g1)), rtol=1e-15)

    # weight decay enters the gradient (and so the buffer), not the returned g
    opt = SGD(learning_rate=lr, momentum=mu, weight_decay=wd)
    r1 = opt.step(None, x0, 0.0, g0)
    d0 = g0 + wd * x0
    np.testing.assert_allclose(r1.x, x0 - lr * d0, rtol=1e-15)
    assert np.array_equal(r1.g, g0)
    x2 = opt.step(None, r1.x, 0.0, g1).x
    np.testing.assert_allclose(x2, r1.x - lr * (mu * d0 + g1 + wd * r1.x), rtol=1e-15)


def test_sgd_leaves_inputs_alone_and_evaluates_only_without_g():
    fun, x = least_squares()
    f, g = fun(x)
    x_in, g_in = x.copy(), g.copy()
    opt = SGD(learning_rate=0.1, momentum=0.9)
    r = opt.step(fun, x, f, g)
    assert r.trials == 0 and r.f == f
    assert np.array_equal(x, x_in) and np.array_equal(g, g_in)
    g[:] = 1e6                      # the caller reuses its array: the buffer must not see it
    assert np.array_equal(opt.state_dict()["momentum_buffer"], g_in)
    x1 = r.x
    r = opt.step(fun, x1)           # no gradient given: evaluated here, at the input
    assert r.trials == 1 and r.f == fun(x1)[0]
    with pytest.raises(ValueError, match="needs g or fun"):
        opt.step(None, x)
    with pytest.raises(ValueError, match="shape"):
        opt.step(None, x, 0.0, np.ones(2))


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_sgd_minimises_a_quadratic_faster_than_plain_sgd(nesterov):
    fun, A, b, xstar = quadratic(n=6, seed=3, cond=50.0)
    L = np.linalg.eigvalsh(A).max()

    def iterations(opt, tol=1e-8, max_iter=20000):
        x = np.zeros(6)
        for it in range(max_iter):
            if np.linalg.norm(x - xstar) <= tol * np.linalg.norm(xstar):
                return it, x
            x = opt.step(fun, x).x
        return max_iter, x

    it_mom, x = iterations(SGD(learning_rate=1.0 / L, momentum=0.8, nesterov=nesterov))
    it_plain, _ = iterations(SGD(learning_rate=1.0 / L))
    assert np.linalg.norm(x - xstar) <= 1e-8 * np.linalg.norm(xstar)
    assert it_mom < 20000
    assert it_mom < it_plain / 2, (it_mom, it_plain)


@pytest.mark.parametrize("kwargs, match", [
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(learning_rate=float("nan")), "learning_rate"),
    (dict(learning_rate="0.1"), "learning_rate"),
    (dict(momentum=-0.1), "momentum"),
    (dict(momentum=1.0), "momentum"),
    (dict(nesterov=True), "nesterov"),
    (dict(momentum=0.9, nesterov="yes"), "nesterov"),
    (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(weight_decay=float("inf")), "weight_decay"),
    (dict(schedule="cosine"), "schedule"),
])
def test_sgd_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGD(**kwargs)


def test_adam_weight_decay_by_hand_and_validation():
    lr, wd = 0.01, 0.1
    x0 = np.array([1.0, -2.0, 0.5, 3.0])
    g0 = np.array([3.0, -1e-3, 250.0, -7.0])
    # AdamW: the first Adam step is lr sign(g); the decay lr wd x comes on top
    r = Adam(learning_rate=lr, weight_decay=wd).step(None, x0, 1.0, g0)
    np.testing.assert_allclose(r.x, x0 - lr * wd * x0 - lr * np.sign(g0), rtol=1e-6)
    assert np.array_equal(r.g, g0)
    # L2 (decoupled=False): the decay enters the moments instead
    opt = Adam(learning_rate=lr, weight_decay=wd, decoupled=False)
    g = np.array([0.0, 1.0, -1.0, 0.0])
    x1 = opt.step(None, x0, 1.0, g).x
    np.testing.assert_allclose(x1, x0 - lr * np.sign(g + wd * x0), rtol=1e-6)
    gw = g + wd * x1
    x2 = opt.step(None, x1, 1.0, g).x
    m = 0.9 * 0.1 * (g + wd * x0) + 0.1 * gw
    v = 0.999 * 0.001 * (g + wd * x0) ** 2 + 0.001 * gw ** 2
    np.testing.assert_allclose(x2, x1 - lr * (m / (1 - 0.9**2)) / (np.sqrt(v / (1 - 0.999**2)) + 1e-8),
                               rtol=1e-13)
    with pytest.raises(ValueError, match="weight_decay"):
        Adam(weight_decay=-0.1)
    with pytest.raises(ValueError, match="schedule"):
        Adam(schedule=0.5)


def test_evaluates_new_point_tells_where_f_and_g_are():
    fun, x = least_squares()
    for opt, new in ((LBFGS(), True), (GradientDescent(), True),
                     (GradientDescent(learning_rate=0.1, line_search=False), True),
                     (Adam(), False), (SGD(momentum=0.9), False)):
        assert opt.evaluates_new_point is new
        r = opt.step(fun, x)
        assert np.array_equal(r.g, fun(r.x if new else x)[1])


def test_adam_without_decay_and_with_constant_schedule_is_plain_adam():
    fun, x0 = least_squares(seed=4)
    runs = []
    for opt in (Adam(learning_rate=0.05), Adam(learning_rate=0.05, weight_decay=0.0, decoupled=False,
                                               schedule=make_schedule("constant"))):
        x = x0
        for _ in range(20):
            x = opt.step(fun, x).x
        runs.append(x)
    assert np.array_equal(runs[0], runs[1])


# ----------------------------------------------------------------------------
# optimiser state
# ----------------------------------------------------------------------------
def _noisy(fun, seed):
    """Deterministic 'mini-batch' gradients: fun's gradient plus noise drawn
    from the step count (so that a restarted run sees the same batches)."""
    calls = {"k": 0}

    def batch(x):
        f, g = fun(x)
        noise = np.random.default_rng([seed, calls["k"]]).normal(scale=0.1, size=g.shape)
        calls["k"] += 1
        return f, g + noise
    return batch


def _through_npz(state):
    """Save a state with np.savez and read it back (only arrays and numbers)."""
    for k, v in state.items():
        assert isinstance(v, (np.ndarray, int, float)) and not isinstance(v, bool), (k, v)
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf) as z:
        return {k: z[k] for k in z.files}


_OPTIMISERS = {
    "lbfgs": (lambda: LBFGS(memory=3), "rosen"),
    "gd_line_search": (lambda: GradientDescent(learning_rate=1.0), "rosen"),
    "gd_fixed": (lambda: GradientDescent(learning_rate=1e-3, line_search=False), "rosen"),
    "adam": (lambda: Adam(learning_rate=0.05), "noisy"),
    "adamw_cosine_warmup": (lambda: Adam(learning_rate=0.1, weight_decay=0.05, schedule=make_schedule(
        "cosine", total_steps=10, warmup_steps=3, min_factor=0.1)), "noisy"),
    "adam_l2": (lambda: Adam(learning_rate=0.1, weight_decay=0.05, decoupled=False), "noisy"),
    "sgd": (lambda: SGD(learning_rate=0.1), "noisy"),
    "sgd_nesterov_step": (lambda: SGD(learning_rate=0.2, momentum=0.9, nesterov=True, weight_decay=0.01,
                                      schedule=make_schedule("step", step_size=3, gamma=0.5)), "noisy"),
}


@pytest.mark.parametrize("which", sorted(_OPTIMISERS))
def test_state_round_trip_continues_bit_for_bit(which):
    """10 steps straight == 5 steps, state_dict -> np.savez -> load_state_dict
    into a fresh optimiser, 5 more steps (bit for bit)."""
    make, kind = _OPTIMISERS[which]
    if kind == "rosen":
        fun, x0 = rosen, np.array([-1.2, 1.0, 0.5, -0.3])

        def batch(x, t):
            return rosen(x)
    else:
        ls, x0 = least_squares(seed=7)
        fun = None

        def batch(x, t):        # the "mini-batch" of step t
            f, g = ls(x)
            return f, g + np.random.default_rng([11, t]).normal(scale=0.1, size=g.shape)

    def steps(opt, x, t0, k):
        f, g = batch(x, t0)
        for t in range(t0, t0 + k):
            r = opt.step(fun, x, f, g)
            assert r.accepted
            x = r.x
            f, g = batch(x, t + 1)
        return x

    straight = make()
    x10 = steps(straight, x0, 0, 10)
    first = make()
    x5 = steps(first, x0, 0, 5)
    state = _through_npz(first.state_dict())
    fresh = make()
    fresh.load_state_dict(state)
    assert fresh.state_dict().keys() == first.state_dict().keys()
    assert np.array_equal(steps(fresh, x5, 5, 5), x10)
    assert not np.array_equal(x10, x5)
    if which == "lbfgs":
        assert first.n_pairs == 3 and state["s"].shape == (3, 4)
    if isinstance(first, (Adam, SGD)):
        assert fresh.t == straight.t == 10


def test_empty_states_round_trip():
    for make in (LBFGS, GradientDescent, Adam, SGD, lambda: SGD(momentum=0.9)):
        state = _through_npz(make().state_dict())
        fresh = make()
        fresh.load_state_dict(state)
        assert fresh.state_dict().keys() == state.keys()
    assert LBFGS().state_dict()["s"].shape == (0, 0)
    assert GradientDescent().state_dict() == {}
    assert Adam().state_dict() == {"t": 0}


def _lbfgs_state(k=2, n=3):
    opt = LBFGS(memory=5)
    x = np.linspace(-1.0, 1.0, n)
    for _ in range(k):
        x = opt.step(rosen, x).x
    st = opt.state_dict()
    assert st["s"].shape == (k, n)
    return st


@pytest.mark.parametrize("make, state, match", [
    (LBFGS, lambda: {**_lbfgs_state(), "y": np.zeros((2, 4))}, "pairs"),
    (LBFGS, lambda: {**_lbfgs_state(), "rho": np.ones(3)}, "pairs"),
    (LBFGS, lambda: {**_lbfgs_state(), "s": np.zeros(6)}, "2-D"),
    (LBFGS, lambda: {**_lbfgs_state(), "rho": -np.ones(2)}, "rho"),
    (lambda: LBFGS(memory=1), _lbfgs_state, "memory"),
    (LBFGS, lambda: {k: v for k, v in _lbfgs_state().items() if k != "resets"}, "missing"),
    (LBFGS, lambda: {**_lbfgs_state(), "extra": 1}, "unknown"),
    (LBFGS, lambda: {**_lbfgs_state(), "resets": -1}, "resets"),
    (GradientDescent, lambda: {"t": 0}, "unknown"),
    (Adam, lambda: {"t": 2, "m": np.zeros(3), "v": np.zeros(4)}, "shape"),
    (Adam, lambda: {"t": 2, "m": np.zeros((3, 1)), "v": np.zeros((3, 1))}, "1-D"),
    (Adam, lambda: {"t": 2, "m": np.zeros(3)}, "together"),
    (Adam, lambda: {"t": 0, "m": np.zeros(3), "v": np.zeros(3)}, "t >= 1"),
    (Adam, lambda: {"t": 3}, "moments"),
    (Adam, lambda: {"t": 1.5, "m": np.zeros(3), "v": np.zeros(3)}, "t must"),
    (Adam, lambda: [("t", 0)], "dict"),
    (SGD, lambda: {"t": 2, "momentum_buffer": np.zeros(3)}, "momentum=0"),
    (lambda: SGD(momentum=0.9), lambda: {"t": 2}, "momentum_buffer"),
    (lambda: SGD(momentum=0.9), lambda: {"t": 2, "momentum_buffer": np.zeros((1, 3))}, "1-D"),
])
def test_load_state_dict_validates(make, state, match):
    with pytest.raises(ValueError, match=match):
        make().load_state_dict(state())


def test_loaded_state_must_fit_the_parameters():
    fun, x = least_squares(n=6)
    for opt in (Adam(), SGD(momentum=0.9)):
        opt.step(fun, x)
        fresh = type(opt)(**({"momentum": 0.9} if isinstance(opt, SGD) else {}))
        fresh.load_state_dict(opt.state_dict())
        with pytest.raises(ValueError, match="loaded for 6 parameters"):
            fresh.step(None, np.zeros(5), 0.0, np.ones(5))
        fresh.reset()                      # reset() forgets the state: any shape again
        assert fresh.step(None, np.zeros(5), 0.0, np.ones(5)).accepted
    # without a loaded state a new shape starts afresh (Adam's behaviour so far)
    opt = Adam()
    opt.step(fun, x)
    opt.step(None, np.zeros(5), 0.0, np.ones(5))
    assert opt.t == 1
    lb = LBFGS()
    lb.load_state_dict(_lbfgs_state(n=3))
    with pytest.raises(ValueError, match="pairs of length 3"):
        lb.step(rosen, np.zeros(4))


# ----------------------------------------------------------------------------
# factory
# ----------------------------------------------------------------------------
def _config(**over):
    """An [optimizer] section with every key at the defaults the config
    module is to give them."""
    cfg = dict(name="lbfgs", max_iter=100, memory=10, c1=1e-4, shrink=0.5, max_trials=20, gtol=1e-4,
               learning_rate=1e-2, batch_size=0, beta1=0.9, beta2=0.999, eps=1e-8,
               momentum=0.0, nesterov=False, weight_decay=0.0, decoupled=True,
               schedule="constant", warmup_steps=0, step_size=0, gamma=0.1, min_lr_factor=0.0)
    cfg.update(over)
    return SimpleNamespace(**cfg)


def test_make_optimizer_sgd_adam_and_schedules():
    o = make_optimizer(_config(name="sgd", learning_rate=0.3, momentum=0.9, nesterov=True,
                               weight_decay=1e-3))
    assert isinstance(o, SGD)
    assert (o.learning_rate, o.momentum, o.nesterov, o.weight_decay, o.schedule) == (0.3, 0.9, True, 1e-3, None)
    o = make_optimizer({"name": "sgd"})
    assert (o.learning_rate, o.momentum, o.nesterov, o.weight_decay) == (0.01, 0.0, False, 0.0)

    o = make_optimizer(_config(name="adam", weight_decay=0.01, decoupled=False))
    assert isinstance(o, Adam) and (o.weight_decay, o.decoupled, o.schedule) == (0.01, False, None)
    assert make_optimizer({"name": "adam"}).decoupled is True

    o = make_optimizer(_config(name="adam", schedule="cosine", warmup_steps=5, min_lr_factor=0.1),
                       total_steps=50)
    assert o.schedule == make_schedule("cosine", total_steps=50, warmup_steps=5, min_factor=0.1)
    o = make_optimizer(_config(name="sgd", schedule="step", step_size=10, gamma=0.5))
    assert o.schedule == make_schedule("step", step_size=10, gamma=0.5)
    o = make_optimizer(_config(name="sgd", warmup_steps=3))
    assert o.schedule == make_schedule("constant", warmup_steps=3)

    # the config's defaults build the same optimisers as before
    assert isinstance(make_optimizer(_config()), LBFGS)
    assert isinstance(make_optimizer(_config(name="gd")), GradientDescent)

    with pytest.raises(ValueError, match="total_steps"):
        make_optimizer(_config(name="sgd", schedule="cosine"))
    with pytest.raises(ValueError, match="step_size"):
        make_optimizer(_config(name="sgd", schedule="step"))
    with pytest.raises(ValueError, match="momentum"):
        make_optimizer(_config(name="sgd", momentum=1.5))
    for name in ("lbfgs", "gd"):
        with pytest.raises(ValueError, match="sgd and adam"):
            make_optimizer(_config(name=name, schedule="step", step_size=3))
        with pytest.raises(ValueError, match="sgd and adam"):
            make_optimizer(_config(name=name, warmup_steps=2))
    with pytest.raises(ValueError, match="sgd"):
        make_optimizer({"name": "rmsprop"})


# ----------------------------------------------------------------------------
# comparison with torch.optim (float64, 30 steps, 1e-12 relative)
# ----------------------------------------------------------------------------
STEPS = 30


def _torch_schedule(torch, opt, spec):
    """torch's lr scheduler for a schedule spec (None: constant)."""
    S = torch.optim.lr_scheduler
    if spec is None:
        return None
    name, kw = spec
    w = kw.get("warmup_steps", 0)
    lr = opt.param_groups[0]["lr"]
    if name == "step":
        main = S.StepLR(opt, step_size=kw["step_size"], gamma=kw["gamma"])
    elif name == "cosine":
        main = S.CosineAnnealingLR(opt, T_max=kw["total_steps"] - w, eta_min=kw["min_factor"] * lr)
    else:
        main = None
    if not w:
        return main
    warm = S.LinearLR(opt, start_factor=1.0 / w, end_factor=1.0, total_iters=w - 1)
    if main is None:
        return warm
    return S.SequentialLR(opt, [warm, main], milestones=[w])


_SCHEDULES = {
    "none": None,
    "step": ("step", dict(step_size=7, gamma=0.5)),
    "cosine": ("cosine", dict(total_steps=STEPS, min_factor=0.1)),
    "warmup": ("constant", dict(warmup_steps=5)),
    "warmup_step": ("step", dict(warmup_steps=4, step_size=6, gamma=0.3)),
    "warmup_cosine": ("cosine", dict(warmup_steps=5, total_steps=STEPS, min_factor=0.05)),
}

_CASES = [
    # (ours, torch class name, torch kwargs)
    ("sgd", dict(learning_rate=0.5), "SGD", dict(lr=0.5)),
    ("sgd_momentum", dict(learning_rate=0.2, momentum=0.9), "SGD", dict(lr=0.2, momentum=0.9)),
    ("sgd_nesterov", dict(learning_rate=0.2, momentum=0.9, nesterov=True), "SGD",
     dict(lr=0.2, momentum=0.9, nesterov=True)),
    ("sgd_weight_decay", dict(learning_rate=0.2, momentum=0.5, weight_decay=0.1), "SGD",
     dict(lr=0.2, momentum=0.5, weight_decay=0.1)),
    ("sgd_nesterov_weight_decay", dict(learning_rate=0.2, momentum=0.8, nesterov=True, weight_decay=0.05),
     "SGD", dict(lr=0.2, momentum=0.8, nesterov=True, weight_decay=0.05)),
    ("adam", dict(learning_rate=0.05), "Adam", dict(lr=0.05)),
    ("adam_l2", dict(learning_rate=0.05, weight_decay=0.1, decoupled=False), "Adam",
     dict(lr=0.05, weight_decay=0.1)),
    ("adamw", dict(learning_rate=0.05, weight_decay=0.1), "AdamW", dict(lr=0.05, weight_decay=0.1)),
    ("adamw_betas", dict(learning_rate=0.05, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.3), "AdamW",
     dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3)),
]


def _compare_with_torch(case, schedule):
    torch = pytest.importorskip("torch")
    _, ours_kw, torch_name, torch_kw = case
    fun, x0 = least_squares(seed=2)
    batch = _noisy(fun, seed=5)
    batch_t = _noisy(fun, seed=5)
    spec = _SCHEDULES[schedule]
    sched = None if spec is None else make_schedule(spec[0], **spec[1])
    cls = SGD if torch_name == "SGD" else Adam
    ours = cls(**ours_kw, schedule=sched)

    p = torch.nn.Parameter(torch.tensor(x0, dtype=torch.float64))
    topt = getattr(torch.optim, torch_name)([p], **torch_kw)
    tsched = _torch_schedule(torch, topt, spec)

    x = x0.copy()
    worst = 0.0
    for t in range(STEPS):
        lr_t = topt.param_groups[0]["lr"]
        r = ours.step(batch, x)
        assert r.step == pytest.approx(lr_t, rel=1e-12, abs=0)
        x = r.x
        with torch.no_grad():
            _, g = batch_t(p.detach().numpy().copy())
            p.grad = torch.from_numpy(g)
        topt.step()
        if tsched is not None:
            tsched.step()
        xt = p.detach().numpy()
        err = np.max(np.abs(x - xt)) / np.max(np.abs(xt))
        worst = max(worst, err)
        assert err <= 1e-12, (t, err)
    assert np.linalg.norm(x - x0) > 0.1 * np.linalg.norm(x0)     # it went somewhere
    return worst


@pytest.mark.parametrize("case", _CASES, ids=[c[0] for c in _CASES])
def test_matches_torch_optim(case):
    _compare_with_torch(case, "none")


_SCHEDULED = [c for c in _CASES if c[0] in ("sgd_momentum", "sgd_nesterov_weight_decay", "adam_l2", "adamw")]


@pytest.mark.parametrize("schedule", [k for k in _SCHEDULES if k != "none"])
@pytest.mark.parametrize("case", _SCHEDULED, ids=[c[0] for c in _SCHEDULED])
def test_schedules_match_torch_lr_schedulers(case, schedule):
    _compare_with_torch(case, schedule)
