"""The regularisers are one compiled function (``regularization_values``) used by the
network's objective and by the layer-sharded optimiser. Its arithmetic is fixed: each
slot's value and each gradient entry are formed by plain IEEE operations in a fixed
order (no fused multiply-add), so any split of the layers, any process and any machine
forms the same bits. These tests hold it to a reference written with Python floats,
operation by operation, after the former NumPy implementation of the sharded regulariser."""
from __future__ import annotations

import numpy as np
import pytest

from layerparallel.layer_parallel import LayerShard
from layerparallel.model import ConvResNet, Regularization, ResNet


def seq_dot(x, y) -> float:
    acc = 0.0
    for a, b in zip(x, y):
        acc += a * b  # two roundings: the product, then the sum
    return acc


def reference(model, theta, a, b, first, last):
    """(slot values, gradient) of the owned entries, in the documented slot order."""
    r = model.regularization
    N, h = model.layers, model.h
    blocks = model.core.parameter_blocks()
    S = sum(N if blk["per_layer"] else 1 for blk in blocks)
    tik, cls = [0.0] * S, [0.0] * S
    grad = [0.0] * model.size
    smooth = r.ddt > 0 and N > 1
    g = r.ddt / (h * h) if smooth else 0.0
    terms = []
    slot = 0
    for blk in blocks:
        weight = r.classifier if blk["classifier"] else r.tikhonov
        half = 0.5 * weight
        vals = cls if blk["classifier"] else tik
        size = int(np.prod(blk["shape"])) if blk["shape"] else 1
        off = blk["offset"]
        if not blk["per_layer"]:
            if (last if blk["classifier"] else first):
                x = [float(v) for v in theta[off:off + size]]
                if weight > 0:
                    vals[slot] = half * seq_dot(x, x)
                    for k in range(size):
                        grad[off + k] = 0.0 + weight * x[k]
            slot += 1
            continue
        row = size // N
        rows = [[float(v) for v in theta[off + n * row:off + (n + 1) * row]] for n in range(N)]
        term = [0.0] * N
        for n in range(a, b):
            if weight > 0:
                vals[slot + n] = half * seq_dot(rows[n], rows[n])
                for k in range(row):
                    grad[off + n * row + k] = 0.0 + weight * rows[n][k]
        if smooth:
            for n in range(max(a, 1), b):
                d = [rows[n][k] - rows[n - 1][k] for k in range(row)]
                term[n] = (0.5 * g) * seq_dot(d, d)
                for k in range(row):
                    grad[off + n * row + k] += g * d[k]
            for n in range(a, min(b, N - 1)):
                for k in range(row):
                    grad[off + n * row + k] -= g * (rows[n + 1][k] - rows[n][k])
            terms.extend(term)
        slot += N
    return np.array(tik + cls + terms), np.array(grad)


MODELS = {
    "dense": lambda reg: ResNet(n_features=3, n_classes=3, width=4, layers=6, T=2.0, regularization=reg, seed=4),
    "expand": lambda reg: ResNet(n_features=3, n_classes=3, width=4, layers=5, T=2.0, opening="expand",
                                 regularization=reg, seed=5),
    "conv": lambda reg: ConvResNet(channels=2, height=3, width=4, n_classes=3, layers=4, T=1.0, opening="conv",
                                   regularization=reg, seed=6),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("reg", [Regularization(1e-3, 2e-3, 5e-3), Regularization(0.0, 2e-3, 0.0),
                                 Regularization(1e-2, 0.0, 3e-2)])
def test_values_and_gradient_match_the_reference_bit_for_bit(kind, reg):
    model = MODELS[kind](reg)
    rng = np.random.default_rng(7)
    model.theta[:] = rng.uniform(-1, 1, model.size)
    N = model.layers
    total = None
    for a, b, first, last in [(0, N, True, True), (0, 2, True, False), (2, N - 1, False, False),
                              (N - 1, N, False, True)]:
        values, grad = model.core.regularization_values(model.theta, a, b, first, last, reg.tikhonov,
                                                        reg.classifier, reg.ddt)
        rv, rg = reference(model, model.theta, a, b, first, last)
        assert values.tobytes() == rv.tobytes(), (a, b)
        assert grad.tobytes() == rg.tobytes(), (a, b)
        if (a, b) != (0, N):
            total = values if total is None else total + values
    whole, _ = model.core.regularization_values(model.theta, 0, N, True, True, reg.tikhonov, reg.classifier,
                                                reg.ddt)
    assert np.array_equal(total, whole)  # each slot has exactly one owner
    # The objective's regulariser is the left-to-right sum of the whole vector's values.
    acc = 0.0
    for v in whole:
        acc += float(v)
    assert model.core.regularization(model.theta, reg.tikhonov, reg.classifier, reg.ddt)[0] == acc


def test_one_process_shard_is_the_networks_regulariser():
    reg = Regularization(1e-3, 2e-3, 5e-3)
    model = MODELS["dense"](reg)
    shard = LayerShard(model)
    value, grad = shard.regularization(shard.local(model.theta))
    v2, g2 = model.core.regularization(model.theta, reg.tikhonov, reg.classifier, reg.ddt)
    assert value == v2
    assert np.array_equal(grad, g2[shard.index])


def test_bad_layer_range_is_one_clear_error():
    model = MODELS["dense"](Regularization())
    with pytest.raises(ValueError, match="owned layers"):
        model.core.regularization_values(model.theta, 3, 9, True, True, 0.0, 0.0, 0.0)
