"""The same per-layer ESSO step and SGD step as `esso bench`, written directly in JAX (CPU, jit).

784-128-64-10, f64, softmax cross-entropy, batch 1 (or --batch-size B, ESSO averaging the B
per-sample directions with vmap). ESSO per layer, absolute spectral function:

    H_L = diag(p) - p p^T,  H_l = diag(s) W_{l+1}^T H_{l+1} W_{l+1} diag(s) + diag(c)
    u_l = U f(|a~|^2 mu) U^T delta_l   (eigh per layer),  W_l <- W_l - lr * u_l a~^T

Prints one JSON object: samples/s of each step. Usage:
    python esso_jax.py [--activation tanh|relu] [--batch-size 1] [--seconds 3]
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)


def init(key, sizes):
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        limit = (6.0 / (n_in + n_out)) ** 0.5
        params.append((jax.random.uniform(sub, (n_out, n_in), minval=-limit, maxval=limit), jnp.zeros(n_out)))
    return params


def make(act_name, lr, lam):
    act = jnp.tanh if act_name == "tanh" else jax.nn.relu

    def d1d2(z, a):
        if act_name == "tanh":
            d = 1.0 - a * a
            return d, -2.0 * a * d
        return (z > 0).astype(z.dtype), jnp.zeros_like(z)

    def loss_fn(params, x, y):
        a = x
        for w, b in params[:-1]:
            a = act(w @ a + b)
        w, b = params[-1]
        z = w @ a + b
        return jax.nn.logsumexp(z) - z[y]

    @jax.jit
    def sgd_step(params, xs, ys):
        g = jax.grad(lambda p: jnp.mean(jax.vmap(lambda x, y: loss_fn(p, x, y))(xs, ys)))(params)
        return [(w - lr * gw, b - lr * gb) for (w, b), (gw, gb) in zip(params, g)]

    def sample_factors(params, x, y):
        # forward
        inputs, pres = [], []
        a = x
        for i, (w, b) in enumerate(params):
            inputs.append(a)
            z = w @ a + b
            pres.append(z)
            a = act(z) if i + 1 < len(params) else z
        p = jax.nn.softmax(pres[-1])
        delta = p - jax.nn.one_hot(y, p.shape[0], dtype=p.dtype)
        h = jnp.diag(p) - jnp.outer(p, p)
        factors = [None] * len(params)
        for l in range(len(params) - 1, -1, -1):
            a_in = inputs[l]
            norm_sq = a_in @ a_in + 1.0
            mu, u = jnp.linalg.eigh(h)
            e = norm_sq * mu
            factors[l] = u @ ((u.T @ delta) / (jnp.abs(e) + lam))
            if l > 0:
                w = params[l][0]
                back = w.T @ delta
                s, c2 = d1d2(pres[l - 1], inputs[l])
                c = c2 * back
                h = (s[:, None] * (w.T @ h @ w) * s[None, :]) + jnp.diag(c)
                delta = s * back
        return factors, inputs

    @jax.jit
    def esso_step(params, xs, ys):
        factors, inputs = jax.vmap(lambda x, y: sample_factors(params, x, y))(xs, ys)
        new = []
        for (w, b), u, a in zip(params, factors, inputs):
            new.append((w - lr * jnp.mean(u[:, :, None] * a[:, None, :], axis=0), b - lr * jnp.mean(u, axis=0)))
        return new

    return sgd_step, esso_step


def rate(step, params, xs, ys, batch, seconds):
    n = xs.shape[0]
    i = 0
    params = step(params, xs[:batch], ys[:batch])  # compile
    jax.block_until_ready(params)
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if i + batch > n:
            i = 0
        params = step(params, xs[i:i + batch], ys[i:i + batch])
        i += batch
        steps += 1
    jax.block_until_ready(params)
    return steps * batch / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--activation", default="tanh", choices=["tanh", "relu"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    sizes = [784, 128, 64, 10]
    key = jax.random.PRNGKey(0)
    params = init(key, sizes)
    xs = jax.random.uniform(jax.random.PRNGKey(1), (256, 784))
    ys = jnp.arange(256) % 10
    sgd_step, esso_step = make(args.activation, 1e-3, 3.0)
    sgd = rate(sgd_step, params, xs, ys, args.batch_size, args.seconds)
    esso = rate(esso_step, params, xs, ys, args.batch_size, args.seconds)
    print(json.dumps({
        "network": "784-128-64-10 " + args.activation,
        "batch_size": args.batch_size,
        "jax": jax.__version__,
        "sgd_samples_per_s": sgd,
        "esso_layerwise_samples_per_s": esso,
        "esso_over_sgd_time_ratio": sgd / esso,
    }))


if __name__ == "__main__":
    main()
