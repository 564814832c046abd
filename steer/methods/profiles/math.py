"""The math of latent preference profiles: a PAL-style mixture prior over attribute weights.

A user's weights over a scorer's d attributes are

    w = P^T softmax(a) + offset          (then seeded attributes replace the mixture part,
                                          pinned attributes replace the whole weight)

with P the K x d shared prototypes (PAL's prototype points), ``a`` the user's K mixture logits
(PAL's W_i) and ``offset`` a small per-user correction (P-RLHF's user offset). A user prefers
answer x over y with probability sigmoid(w . (x - y)) (Bradley-Terry on attribute differences;
the scale of w is PAL's learnable temperature), x and y the scorer's rows scaled to 0-1 by the
scorer's ranges.

Online (one feedback event): the prototypes are frozen and only the user's (a, offset) are fitted
on the user's own pairs (at most ``max_pairs``), PAL's few-shot fit of a new user. Once a prior
is fitted it carries a sample of the fitted users (``Prior.support``, empirical Bayes): the user
gets the posterior mean of (mixture, offset) over that sample, each member weighted by the
likelihood of the user's pairs, then a MAP correction of the offset, N(0, 1/lam_offset), so that
a user unlike anyone seen can still leave the population (``_posterior_fit``; its cost per feedback
event is ``steer bench rerank``'s "one feedback update", docs/benchmarks.md). Before any fit (one
default prototype), MAP with Gaussian priors a ~ N(a0, 1/lam_mix) and offset ~ N(0, 1/lam_offset),
a few Gauss-Newton steps (``_map_fit``).

Offline (``steer profiles fit``, ``fit_prior``): K chosen by few-shot accuracy on a held-out share
of the users, then prototypes, population logits and every user's parameters jointly, with torch
(Adam), on all users' pairs; the users with the most pairs become ``Prior.support``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from steer.storage.profiles import Prior, UserParams

__all__ = ["Hyper", "Prior", "UserParams"]  # and the functions below; Prior, UserParams: the stored shapes

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Hyper:
    lam_mix: float = 1.0  # precision of the prior on the mixture logits (around the population's)
    lam_offset: float = 4.0  # precision of the prior on the per-user offset (around 0)
    iterations: int = 6  # Gauss-Newton steps per online update
    max_pairs: int = 256  # latest pairs of the user used by an online update
    support: int = 128  # fitted users kept in the prior as the population's sample (posterior mean)
    ks: tuple[int, ...] = (2, 3, 4, 6, 8)  # prototype counts tried by ``fit_prior`` (chosen on validation users)
    validation: float = 0.2  # share of the users ``fit_prior`` holds out to choose K


def default_prior(attributes: Sequence[str], default_weights: Mapping[str, float] | None) -> Prior:
    """Before any fit: one prototype, the scorer's default weights (else uniform)."""
    if default_weights:
        proto = [float(default_weights.get(a, 0.0)) for a in attributes]
    else:
        proto = [1.0 / max(1, len(attributes))] * len(attributes)
    return Prior(tuple(attributes), [proto], [0.0])


def fresh_user(prior: Prior) -> UserParams:
    return UserParams(list(prior.logits), [0.0] * len(prior.attributes))


def normalise(
    rows: Sequence[Sequence[float]], attributes: Sequence[str], ranges: Mapping[str, tuple[float, float]]
) -> Array:
    """Scale each attribute to 0-1 by the scorer's declared range (values outside are clipped)."""
    import numpy as np

    x = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(attributes))
    lo = np.array([ranges[a][0] for a in attributes])
    hi = np.array([ranges[a][1] for a in attributes])
    span = np.where(hi > lo, hi - lo, 1.0)
    out: Array = np.clip((x - lo) / span, 0.0, 1.0)
    return out


def _softmax(a: Array) -> Array:
    import numpy as np

    e = np.exp(a - a.max())
    out: Array = e / e.sum()
    return out


def _masks(
    attributes: Sequence[str], seeds: Mapping[str, float], pins: Mapping[str, float]
) -> tuple[Any, Array, Any, Array]:
    import numpy as np

    d = len(attributes)
    seed_mask = np.array([a in seeds for a in attributes], dtype=bool)
    pin_mask = np.array([a in pins for a in attributes], dtype=bool)
    seed_vals = np.array([seeds.get(a, 0.0) for a in attributes], dtype=np.float64)
    pin_vals = np.array([pins.get(a, 0.0) for a in attributes], dtype=np.float64)
    assert seed_mask.shape == (d,)
    return seed_mask, seed_vals, pin_mask, pin_vals


def weights(prior: Prior, params: UserParams, seeds: Mapping[str, float], pins: Mapping[str, float]) -> Array:
    """The user's weight vector (seeds and pins: the policy's, overridden by the user's own)."""
    import numpy as np

    seeds = {**seeds, **params.seeds}
    pins = {**pins, **params.pinned}
    seed_mask, seed_vals, pin_mask, pin_vals = _masks(prior.attributes, seeds, pins)
    p = np.asarray(prior.prototypes, dtype=np.float64)
    base = p.T @ _softmax(np.asarray(params.mixture, dtype=np.float64))
    w: Array = np.where(seed_mask, seed_vals, base) + np.asarray(params.offset, dtype=np.float64)
    out: Array = np.where(pin_mask, pin_vals, w)
    return out


def unit(w: Array) -> Array:
    import numpy as np

    norm = float(np.linalg.norm(w))
    if norm == 0.0 or not math.isfinite(norm):
        out: Array = np.full(w.shape, 1.0 / math.sqrt(max(1, w.size)))
        return out
    result: Array = w / norm
    return result


def fit_user(
    prior: Prior,
    params: UserParams,
    deltas: Array,
    pair_weights: Array,
    seeds: Mapping[str, float],
    pins: Mapping[str, float],
    hyper: Hyper = Hyper(),
) -> UserParams:
    """Fit one user's (mixture logits, offset) on their pairs, prototypes frozen.

    ``deltas`` holds one row x_winner - x_loser per pair (normalised attributes), ``pair_weights``
    a positive weight per pair. With a fitted prior (``prior.support``, a sample of the population's
    fitted users) the user gets the posterior mean under that population (``_posterior_fit``);
    before any fit, a damped Gauss-Newton MAP from the stored parameters (``_map_fit``).
    """
    import numpy as np

    seeds = {**seeds, **params.seeds}
    pins = {**pins, **params.pinned}
    masks = _masks(prior.attributes, seeds, pins)
    x = np.asarray(deltas, dtype=np.float64).reshape(-1, len(prior.attributes))[-hyper.max_pairs :]
    c = np.asarray(pair_weights, dtype=np.float64).reshape(-1)[-hyper.max_pairs :]
    if prior.support:
        a, off = _posterior_fit(prior, masks, x, c, hyper)
    else:
        a, off = _map_fit(prior, params, masks, x, c, hyper)
    free = ~masks[2]
    return UserParams(
        [float(v) for v in a],
        [float(v) if f else 0.0 for v, f in zip(off, free, strict=True)],
        dict(params.seeds),
        dict(params.pinned),
        params.events,
        params.since,
    )


def _map_fit(
    prior: Prior, params: UserParams, masks: tuple[Any, Array, Any, Array], x: Array, c: Array, hyper: Hyper
) -> tuple[Array, Array]:
    """MAP of (a, offset) with a ~ N(a0, 1/lam_mix), offset ~ N(0, 1/lam_offset): damped Gauss-Newton."""
    import numpy as np

    seed_mask, seed_vals, pin_mask, pin_vals = masks
    p = np.asarray(prior.prototypes, dtype=np.float64)  # K x d
    k, d = p.shape
    a0 = np.asarray(prior.logits, dtype=np.float64)
    a = np.asarray(params.mixture, dtype=np.float64).copy()
    off = np.asarray(params.offset, dtype=np.float64).copy()
    free = ~pin_mask  # attributes learning may move
    mix_rows = free & ~seed_mask  # attributes the mixture part reaches
    lam = np.concatenate([np.full(k, hyper.lam_mix), np.full(d, hyper.lam_offset)])
    for _ in range(hyper.iterations):
        s = _softmax(a)
        base = np.where(seed_mask, seed_vals, p.T @ s)
        w = np.where(pin_mask, pin_vals, base + off)
        margin = x @ w
        sig = 1.0 / (1.0 + np.exp(margin))  # sigmoid(-margin)
        g_w = -(x.T @ (c * sig)) * free  # dL/dw, zero on pinned attributes
        h_w = (x.T * (c * sig * (1.0 - sig))) @ x  # Bradley-Terry Hessian in w
        # Jacobian of w in (a, offset): d x (K + d)
        j_a = (p.T * mix_rows[:, None]) @ (np.diag(s) - np.outer(s, s))
        j = np.concatenate([j_a, np.diag(free.astype(np.float64))], axis=1)
        theta_prior = np.concatenate([a - a0, off])
        grad = j.T @ g_w + lam * theta_prior
        hess = j.T @ h_w @ j + np.diag(lam)
        step = np.linalg.solve(hess, grad)
        a -= step[:k]
        off -= step[k:]
    return a, off


def _posterior_fit(
    prior: Prior, masks: tuple[Any, Array, Any, Array], x: Array, c: Array, hyper: Hyper
) -> tuple[Array, Array]:
    """Posterior mean of the user's profile under the population, then a MAP correction of the offset.

    The population's distribution over (mixture, offset) is the sample of fitted users in
    ``prior.support`` (empirical Bayes). Each sampled profile m is weighted by the likelihood of the
    user's pairs, prod_j sigmoid(w_m . x_j)^c_j; the weighted mean of the mixtures and offsets is the
    posterior mean (w is linear in both). A user unlike anyone seen gets an extra offset, MAP under
    N(0, 1/lam_offset), fitted by Gauss-Newton with the mixture held at the posterior mean: with
    little evidence it stays near zero, with much evidence it leaves the population's hull.
    Cost: one M x d by d x n product plus a d x d solve per step.
    """
    import numpy as np

    seed_mask, seed_vals, pin_mask, pin_vals = masks
    p = np.asarray(prior.prototypes, dtype=np.float64)  # K x d
    k = p.shape[0]
    support = np.asarray(prior.support, dtype=np.float64)
    pis, offs = support[:, :k], support[:, k:]
    free = ~pin_mask
    if len(x):
        wm = np.where(pin_mask, pin_vals, np.where(seed_mask, seed_vals, pis @ p) + offs)  # M x d
        loglik = -(np.logaddexp(0.0, -(wm @ x.T)) @ c)
        post = np.exp(loglik - loglik.max())
        post /= post.sum()
    else:
        post = np.full(len(support), 1.0 / len(support))
    pi = post @ pis
    off = post @ offs
    w0 = np.where(pin_mask, pin_vals, np.where(seed_mask, seed_vals, p.T @ pi) + off)
    delta = np.zeros_like(off)
    for _ in range(hyper.iterations if len(x) else 0):
        sig = 1.0 / (1.0 + np.exp(x @ (w0 + delta * free)))  # sigmoid(-margin)
        grad = -(x.T @ (c * sig)) * free + hyper.lam_offset * delta
        hess = ((x.T * (c * sig * (1.0 - sig))) @ x) * np.outer(free, free) + hyper.lam_offset * np.eye(len(off))
        delta -= np.linalg.solve(hess, grad)
    a: Array = np.log(np.maximum(pi, 1e-12))
    return a, off + delta


def fit_population(
    users: Sequence[tuple[Array, Array]],
    attributes: Sequence[str],
    k: int = 4,
    hyper: Hyper = Hyper(),
    epochs: int = 400,
    lr: float = 0.05,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[Prior, list[UserParams]]:
    """Fit K prototypes, the population's mixture logits and every user's parameters with torch.

    ``users``: one (deltas n_i x d, pair weights n_i) per user. The loss is the summed
    Bradley-Terry negative log-likelihood plus the same Gaussian priors as ``fit_user``.
    """
    import numpy as np
    import torch

    d = len(attributes)
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1, d)) for x, _ in users]
    cs = [torch.as_tensor(np.asarray(c, dtype=np.float64).reshape(-1)) for _, c in users]
    n_users = len(users)
    sizes = torch.tensor([len(x) for x in xs], dtype=torch.long)
    x_all = torch.cat(xs) if xs else torch.zeros((0, d), dtype=torch.float64)
    c_all = torch.cat(cs) if cs else torch.zeros((0,), dtype=torch.float64)
    owner = torch.repeat_interleave(torch.arange(n_users), sizes)

    protos = torch.nn.Parameter(0.5 * torch.randn(k, d, generator=gen, dtype=torch.float64))
    logits0 = torch.nn.Parameter(torch.zeros(k, dtype=torch.float64))
    mix = torch.nn.Parameter(0.5 * torch.randn(n_users, k, generator=gen, dtype=torch.float64))
    offs = torch.nn.Parameter(torch.zeros(n_users, d, dtype=torch.float64))
    opt = torch.optim.Adam([protos, logits0, mix, offs], lr=lr)
    for epoch in range(epochs):
        opt.zero_grad()
        w = torch.softmax(mix, dim=1) @ protos + offs  # n_users x d
        margin = (x_all * w[owner]).sum(dim=1)
        nll = (c_all * torch.nn.functional.softplus(-margin)).sum()
        prior = 0.5 * hyper.lam_mix * ((mix - logits0) ** 2).sum() + 0.5 * hyper.lam_offset * (offs**2).sum()
        loss = (nll + prior) / max(1, n_users)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if progress is not None and (epoch % 50 == 0 or epoch == epochs - 1):
            progress(epoch, float(loss.detach()))
    with torch.no_grad():
        p = protos.detach().numpy()
        prior_out = Prior(
            tuple(attributes),
            [[float(v) for v in row] for row in p],
            [float(v) for v in logits0.detach().numpy()],
            users=n_users,
            events=int(sizes.sum()),
        )
        params = [
            UserParams([float(v) for v in m], [float(v) for v in o], events=int(n))
            for m, o, n in zip(mix.detach().numpy(), offs.detach().numpy(), sizes.tolist(), strict=True)
        ]
    return prior_out, params


def population_support(prior: Prior, params: Sequence[UserParams], size: int) -> list[list[float]]:
    """The fitted users kept as the population's sample: each user's mixture probabilities, then offset.

    At most ``size`` users, those with the most pairs first (their fits are the sharpest), ties in
    the given order.
    """
    import numpy as np

    rows = []
    for i in support_order(params, size):
        pi = _softmax(np.asarray(params[i].mixture, dtype=np.float64))
        rows.append([float(v) for v in pi] + [float(v) for v in params[i].offset])
    return rows


def support_order(params: Sequence[UserParams], size: int) -> list[int]:
    """Which users ``population_support`` keeps, in its order (indices into ``params``)."""
    return sorted(range(len(params)), key=lambda i: -params[i].events)[: max(0, size)]


def few_shot_accuracy(
    prior: Prior, users: Sequence[tuple[Array, Array]], hyper: Hyper = Hyper(), shots: Sequence[int] = (1, 2, 5, 10, 20)
) -> float:
    """How well a prior serves users it was not fitted on: each user's later half of pairs is held out,
    the profile is fitted on their first e pairs (each e in ``shots`` up to half their pairs), and the
    weighted share of held-out pairs it orders right is averaged over users and e."""
    import numpy as np

    scores: list[float] = []
    for x, c in users:
        x = np.asarray(x, dtype=np.float64).reshape(-1, len(prior.attributes))
        c = np.asarray(c, dtype=np.float64).reshape(-1)
        half = len(x) // 2
        if half < 1 or c[half:].sum() <= 0:
            continue
        for e in [e for e in shots if e <= half] or [half]:
            params = fit_user(prior, fresh_user(prior), x[:e], c[:e], {}, {}, hyper)
            m = x[half:] @ weights(prior, params, {}, {})
            right = np.where(m > 0, 1.0, np.where(m == 0, 0.5, 0.0))
            scores.append(float((c[half:] * right).sum() / c[half:].sum()))
    return float(np.mean(scores)) if scores else 0.0


def fit_prior(
    users: Sequence[tuple[Array, Array]],
    attributes: Sequence[str],
    k: int | None = None,
    hyper: Hyper = Hyper(),
    epochs: int = 400,
    lr: float = 0.05,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    ids: Sequence[str] | None = None,
) -> tuple[Prior, list[UserParams], dict[int, float]]:
    """The prior as served: K chosen on held-out users, prototypes fitted on everyone, a population sample.

    Unless ``k`` is given, a ``hyper.validation`` share of the users (at least 2 users on each side,
    else K = 4) is held out; for each K in ``hyper.ks`` the population is fitted on the rest and
    scored by ``few_shot_accuracy`` on the held-out users; the best K (the smaller on a tie) is then
    fitted on all users, and the ``hyper.support`` users with the most pairs are kept in
    ``prior.support``. Returns (prior, every user's parameters, validation score per K tried).
    """
    import numpy as np

    say = progress or (lambda _line: None)
    scores: dict[int, float] = {}
    n_val = round(hyper.validation * len(users))
    if k is None and n_val >= 2 and len(users) - n_val >= 2 and len(hyper.ks) > 1:
        order = np.random.default_rng(seed).permutation(len(users))
        val = [users[i] for i in order[:n_val]]
        fit = [users[i] for i in order[n_val:]]
        for kk in hyper.ks:
            prior, params = fit_population(fit, attributes, k=kk, hyper=hyper, epochs=epochs, lr=lr, seed=seed)
            prior.support = population_support(prior, params, hyper.support)
            scores[kk] = few_shot_accuracy(prior, val, hyper)
            say(f"  K={kk}: few-shot accuracy {scores[kk]:.4f} on {len(val)} held-out users")
        k = max(scores, key=lambda kk: (round(scores[kk], 6), -kk))
    k = k or 4
    say(f"  fitting K={k} on all {len(users)} users")
    prior, params = fit_population(users, attributes, k=k, hyper=hyper, epochs=epochs, lr=lr, seed=seed)
    prior.support = population_support(prior, params, hyper.support)
    if ids is not None:  # the users behind the sample, so that forgetting one drops their row
        prior.support_users = [ids[i] for i in support_order(params, hyper.support)]
    return prior, params, scores


def fit_global(deltas: Array, pair_weights: Array, lam: float = 1.0, iterations: int = 25) -> Array:
    """One weight vector for everyone (the non-personalised baseline): L2-regularised Bradley-Terry."""
    import numpy as np

    x = np.asarray(deltas, dtype=np.float64)
    c = np.asarray(pair_weights, dtype=np.float64)
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        sig = 1.0 / (1.0 + np.exp(x @ w))
        grad = -(x.T @ (c * sig)) + lam * w
        hess = (x.T * (c * sig * (1 - sig))) @ x + lam * np.eye(x.shape[1])
        w -= np.linalg.solve(hess, grad)
    return w
