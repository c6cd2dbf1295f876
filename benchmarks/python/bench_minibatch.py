"""Mini-batch training throughput (issue 14): one epoch of Adam over generated 28x28
images with the convolutional network of examples/mnist.toml (4 channels, 32 layers,
tanh, replicate opening, bias per pixel), serial mode, float64, against a plain PyTorch
training loop of the same network in the same run.

    python benchmarks/python/bench_minibatch.py [--examples 60000] [--batch 128] [--threads 2]

Both see the same images, the same batches in the same order and the same initial
parameters; the first batch's gradients are compared before timing. Ours runs
``lp.train(..., batch_size=128, epochs=1)`` (its history row gives examples per
second); PyTorch runs forward, loss, backward and ``torch.optim.Adam.step`` per batch.
Prints one JSON line: examples per second of each and the ratio.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import layerparallel as lp
from layerparallel import _core, show_config
from layerparallel.dataset import Dataset
from layerparallel.model import ConvResNet, Regularization

C, H, W, N, T = 4, 28, 28, 32, 5.0
REG = Regularization(1e-7, 1e-7, 1e-7)


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generated digit-like data: 10 classes, each a blurred random template plus noise."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, (10, H * W))
    y = rng.integers(0, 10, n)
    x = np.clip(templates[y] * 0.6 + rng.uniform(0, 100, (n, H * W)), 0, 255)
    return x.reshape(n, 1, H, W), y


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=60000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args(argv)
    show_config(file=sys.stdout, mpi=False, prefix="# ")
    threads = args.threads or _core.max_threads()
    _core.set_num_threads(threads)
    x, y = images(args.examples, 0)
    vx, vy = images(200, 1)
    data = Dataset(train_x=x, train_y=y, val_x=vx, val_y=vy, n_features=H * W, n_classes=10)
    model = ConvResNet(H, W, 10, channels=C, layers=N, T=T, activation="tanh", bias="pixel", regularization=REG,
                       init="normal", init_hidden=0.1, init_classifier=0.01, seed=0)
    theta0 = model.theta.copy()
    row = {"case": f"conv C={C} {H}x{W} N={N}, {args.examples} images, batch {args.batch}, 1 epoch, Adam",
           "threads": threads}

    # The batches lp.train draws (seed 0): the same permutation for PyTorch.
    perm = np.random.default_rng(0).permutation(args.examples)
    t = time.perf_counter()
    res = lp.train(model, data, optimizer=lp.Adam(args.lr), batch_size=args.batch, epochs=1, seed=0)
    row["ours_wall_s"] = round(time.perf_counter() - t, 2)
    row["ours_examples_per_s"] = round(res.history[-1]["examples_per_second"], 1)
    row["ours_train_loss"] = res.history[-1]["train_loss"]

    try:
        import torch
    except ImportError:
        print(json.dumps(row))
        return
    torch.set_num_threads(threads)
    fresh = ConvResNet(H, W, 10, channels=C, layers=N, T=T, activation="tanh", bias="pixel", regularization=REG,
                       init="normal", init_hidden=0.1, init_classifier=0.01, seed=0)
    assert np.array_equal(fresh.theta, theta0)
    p = fresh.parameters
    K = torch.tensor(np.array(p["weights"]), requires_grad=True)
    B = torch.tensor(np.array(p["biases"]), requires_grad=True)
    Wc = torch.tensor(np.array(p["classifier_weight"]), requires_grad=True)
    mu = torch.tensor(np.array(p["classifier_bias"]), requires_grad=True)
    params = [K, B, Wc, mu]
    X = torch.tensor(x)
    Y = torch.tensor(y)
    h = T / N

    def objective(xb, yb):
        s = xb.shape[0]
        u = (torch.tanh(6 * xb / 255 - 3) + 1).expand(s, C, H, W)
        for n in range(N):
            u = u + h * torch.tanh(torch.nn.functional.conv2d(u, K[n], padding=1) + B[n])
        z = u.reshape(s, -1) @ Wc.T + mu
        J = torch.nn.functional.cross_entropy(z, yb)
        J = J + 0.5 * REG.tikhonov * ((K ** 2).sum() + (B ** 2).sum()) \
            + 0.5 * REG.classifier * ((Wc ** 2).sum() + (mu ** 2).sum())
        return J + 0.5 * REG.ddt * (((K[1:] - K[:-1]) ** 2).sum() + ((B[1:] - B[:-1]) ** 2).sum()) / h ** 2

    # The same network: the first batch's objective and gradient agree.
    idx = torch.tensor(perm[:args.batch])
    J = objective(X[idx], Y[idx])
    J.backward()
    ev = fresh.evaluate(x[perm[:args.batch]].reshape(args.batch, -1), y[perm[:args.batch]])
    tg = np.concatenate([q.grad.numpy().ravel() for q in params])
    err = float(np.abs(tg - ev.gradient).max() / np.abs(ev.gradient).max())
    assert abs(J.item() - ev.objective) < 1e-10 * abs(ev.objective) and err < 1e-9, (J.item(), ev.objective, err)
    for q in params:
        q.grad = None

    opt = torch.optim.Adam(params, lr=args.lr)
    t = time.perf_counter()
    for start in range(0, args.examples, args.batch):
        idx = torch.tensor(perm[start:start + args.batch])
        opt.zero_grad()
        loss = objective(X[idx], Y[idx])
        loss.backward()
        opt.step()
    torch_s = time.perf_counter() - t
    row["torch_examples_per_s"] = round(args.examples / torch_s, 1)
    row["ratio"] = round(row["ours_examples_per_s"] / row["torch_examples_per_s"], 2)
    theta_t = np.concatenate([q.detach().numpy().ravel() for q in params])
    row["final_params_max_rel_diff"] = float(np.abs(theta_t - model.theta).max() / np.abs(model.theta).max())
    print(json.dumps(row))


if __name__ == "__main__":
    main()
