"""Seconds per gradient evaluation of the MNIST-sized convolutional network
(4 channels, 28x28, 32 layers, 1000 images, tanh, replicate opening, bias per
pixel) against the same network in PyTorch on the CPU, in the same run. The
objectives and gradients are compared before timing.

    python benchmarks/python/bench_conv.py [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from timing import median_seconds

from layerparallel import _core, show_config
from layerparallel.model import ConvResNet, Regularization

REG = Regularization(1e-7, 1e-7, 1e-7)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--examples", type=int, default=1000)
    args = ap.parse_args(argv)
    show_config(file=sys.stdout, mpi=False, prefix="# ")
    threads = args.threads or _core.max_threads()
    _core.set_num_threads(threads)
    C, H, W, N, s = 4, 28, 28, args.layers, args.examples
    model = ConvResNet(H, W, 10, channels=C, layers=N, T=5.0, activation="tanh", bias="pixel", regularization=REG,
                       init="normal", init_hidden=0.1, init_classifier=0.01, seed=0)
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 255, (s, H * W))
    y = rng.integers(0, 10, s)
    ours = median_seconds(lambda: model.evaluate(X, y), args.repeats, warmup=1)
    row = {"case": f"conv C={C} {H}x{W} N={N} s={s}", "threads": threads, "ours_s": ours}
    try:
        import torch
    except ImportError:
        print(json.dumps(row))
        return
    torch.set_num_threads(threads)
    p = model.parameters
    K = torch.tensor(np.array(p["weights"]), requires_grad=True)
    B = torch.tensor(np.array(p["biases"]), requires_grad=True)
    Wc = torch.tensor(np.array(p["classifier_weight"]), requires_grad=True)
    mu = torch.tensor(np.array(p["classifier_bias"]), requires_grad=True)
    Xt = torch.tensor(X).reshape(s, 1, H, W)
    yt = torch.tensor(y)
    h = 5.0 / N

    def objective():
        for q in (K, B, Wc, mu):
            q.grad = None
        u = (torch.tanh(6 * Xt / 255 - 3) + 1).expand(s, C, H, W)
        for n in range(N):
            u = u + h * torch.tanh(torch.nn.functional.conv2d(u, K[n], padding=1) + B[n])
        z = u.reshape(s, -1) @ Wc.T + mu
        J = torch.nn.functional.cross_entropy(z, yt)
        J = J + 0.5 * REG.tikhonov * ((K ** 2).sum() + (B ** 2).sum()) + 0.5 * REG.classifier * ((Wc ** 2).sum() + (mu ** 2).sum())
        J = J + 0.5 * REG.ddt * (((K[1:] - K[:-1]) ** 2).sum() + ((B[1:] - B[:-1]) ** 2).sum()) / h ** 2
        J.backward()
        return J

    J = objective()
    ev = model.evaluate(X, y)
    tg = np.concatenate([q.grad.numpy().ravel() for q in (K, B, Wc, mu)])
    err = float(np.abs(tg - ev.gradient).max() / np.abs(ev.gradient).max())
    assert abs(J.item() - ev.objective) < 1e-10 * abs(ev.objective), (J.item(), ev.objective)
    assert err < 1e-9, err
    theirs = median_seconds(objective, args.repeats, warmup=1)
    row.update(torch_s=theirs, speedup=theirs / ours, max_grad_rel_diff=err)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
