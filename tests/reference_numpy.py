"""Float64 NumPy reference of VRNN and SRNN, written as plain loops over time from MODELS.md.

It shares nothing with the JAX code but the parameter *values*: every layer fed a concatenation
is applied to the concatenation (no kernel splitting, no hoisting), LSTMs are stepped one frame at
a time, and densities use scipy.special. It is the judge of dvae_jax.models and dvae_jax.losses.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def _np(tree):
    if isinstance(tree, dict):
        return {k: _np(v) for k, v in tree.items()}
    return np.asarray(tree, dtype=np.float64)


def _act(name):
    return {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0),
            "clipped_leaky": lambda a: np.clip(np.where(a > 0, a, a / 3.0), -3.0, 3.0)}[name]


def _head(P, name, a, act, final_linear):
    """A latent head: one MLP [mean | logvar], or two separate MLPs (model.separate_heads)."""
    if f"{name}_logvar" not in P:
        return _mlp(P[name], a, act, final_linear)
    return np.concatenate([_mlp(P[name], a, act, final_linear), _mlp(P[f"{name}_logvar"], a, act, final_linear)], -1)


def _layers(mlp):
    return [mlp[f"linear{i}"] for i in range(len(mlp))]


def _mlp(mlp, x, act, head=False):
    """Linear + activation for every layer; with ``head`` the last layer has no activation."""
    ls = _layers(mlp)
    for i, p in enumerate(ls):
        x = x @ p["kernel"] + p["bias"]
        if not (head and i == len(ls) - 1):
            x = act(x)
    return x


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _gru_step(layer, inp, h):
    """torch.nn.GRU's equations, written plainly."""
    xr, xz, xn = np.split(inp @ layer["wi"] + layer["bi"], 3, axis=-1)
    hr, hz, hn = np.split(h @ layer["wh"] + layer["bh"], 3, axis=-1)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    return (1.0 - z) * n + z * h


def _lstm_step(layer, inp, h, c):
    if layer["wh"].shape[1] == 3 * layer["wh"].shape[0]:  # model.rnn_cell=gru
        return _gru_step(layer, inp, h), c
    gates = inp @ layer["wi"] + layer["bi"] + h @ layer["wh"] + layer["bh"]
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def _lstm_stack_step(rnn, inp, hs, cs):
    new_h, new_c = [], []
    for i in range(len(hs)):
        h, c = _lstm_step(rnn[f"layer{i}"], inp, hs[i], cs[i])
        new_h.append(h)
        new_c.append(c)
        inp = h
    return new_h, new_c


def _split(a, z, clip):
    return a[..., :z], np.clip(a[..., z:], -clip, clip)


def vrnn_forward(cfg, params, x, eps):
    """x (b, t, f), eps (b, t, z) -> dict of (b, t, .) arrays."""
    P = _np(params["params"])
    act = _act(cfg.activation)
    b, t_len, _ = x.shape
    H, Z, L = cfg.dim_rnn, cfg.z_dim, cfg.num_rnn
    hs = [np.zeros((b, H)) for _ in range(L)]
    cs = [np.zeros((b, H)) for _ in range(L)]
    keys = ("z", "mean_q", "logvar_q", "prior_loc", "prior_logvar", "x_out")
    out = {k: [] for k in keys}
    for t in range(t_len):
        h = hs[-1]
        phi_x = _mlp(P["phi_x"], x[:, t], act)
        mean_q, logvar_q = _split(_head(P, "posterior", np.concatenate([phi_x, h], -1), act, True), Z, cfg.logvar_clip)
        z = mean_q + np.exp(0.5 * logvar_q) * eps[:, t]
        phi_z = _mlp(P["phi_z"], z, act)
        prior_loc, prior_logvar = _split(_head(P, "prior", h, act, True), Z, cfg.logvar_clip)
        x_out = _decoder(cfg, _mlp(P["decoder"], np.concatenate([phi_z, h], -1), act, True))
        hs, cs = _lstm_stack_step(P["rnn"], np.concatenate([phi_x, phi_z], -1), hs, cs)
        for k, v in zip(keys, (z, mean_q, logvar_q, prior_loc, prior_logvar, x_out)):
            out[k].append(v)
    res = {k: np.stack(v, axis=1) for k, v in out.items()}
    res["nu"] = _nu(cfg, P)
    res["final_state"] = (hs, cs)  # the LSTM after the last frame: h_{T+1}
    return res


def srnn_forward(cfg, params, x, eps):
    P = _np(params["params"])
    act = _act(cfg.activation)
    b, t_len, f = x.shape
    H, G, Z, L = cfg.dim_rnn, cfg.dim_rnn_g, cfg.z_dim, cfg.num_rnn
    # forward deterministic states h_t from x_{t-1}, x_0 = 0
    hs = [np.zeros((b, H)) for _ in range(L)]
    cs = [np.zeros((b, H)) for _ in range(L)]
    h_all = []
    for t in range(t_len):
        x_prev = x[:, t - 1] if t > 0 else np.zeros((b, f))
        hs, cs = _lstm_stack_step(P["rnn_h"], _mlp(P["mlp_x_h"], x_prev, act), hs, cs)
        h_all.append(hs[-1])
    # backward states g_t from [h_t, x_t], t = T .. 1
    gs = [np.zeros((b, G)) for _ in range(L)]
    cg = [np.zeros((b, G)) for _ in range(L)]
    g_all = [None] * t_len
    for t in reversed(range(t_len)):
        x_g = _mlp(P["mlp_x_h"], x[:, t], act) if cfg.share_x_embedding else x[:, t]
        gs, cg = _lstm_stack_step(P["rnn_g"], _mlp(P["mlp_hx_g"], np.concatenate([h_all[t], x_g], -1), act), gs, cg)
        g_all[t] = gs[-1]
    keys = ("z", "mean_q", "logvar_q", "prior_loc", "prior_logvar", "x_out")
    out = {k: [] for k in keys}
    z_prev = np.zeros((b, Z))
    for t in range(t_len):
        h, g = h_all[t], g_all[t]
        prior_loc, prior_logvar = _split(_head(P, "prior", np.concatenate([h, z_prev], -1), act, True), Z, cfg.logvar_clip)
        mean_q, logvar_q = _split(_head(P, "posterior", np.concatenate([g, z_prev], -1), act, True), Z, cfg.logvar_clip)
        if cfg.resq:
            mean_q = prior_loc + mean_q
        z = mean_q + np.exp(0.5 * logvar_q) * eps[:, t]
        x_out = _decoder(cfg, _mlp(P["decoder"], np.concatenate([h, z], -1), act, True))
        for k, v in zip(keys, (z, mean_q, logvar_q, prior_loc, prior_logvar, x_out)):
            out[k].append(v)
        z_prev = z
    res = {k: np.stack(v, axis=1) for k, v in out.items()}
    res["nu"] = _nu(cfg, P)
    res["final_state"] = (hs, cs)  # LSTM_h after h_T
    return res


def _decoder(cfg, a):
    clip = cfg.logvar_clip
    if cfg.likelihood == "itakura_saito":
        return np.clip(a, -clip, clip)
    if cfg.likelihood == "bernoulli":
        return a  # logits
    if cfg.learn_x_var:
        return np.concatenate([a[..., : cfg.x_dim], np.clip(a[..., cfg.x_dim :], -clip, clip)], -1)
    return a


def _nu(cfg, P):
    if cfg.prior != "student_t":
        return None
    if cfg.learn_nu:
        return 2.0 + np.log1p(np.exp(P["prior_nu"]))
    return np.full(cfg.z_dim, cfg.nu)


def forward(cfg, params, x, eps):
    return (vrnn_forward if cfg.model == "vrnn" else srnn_forward)(cfg, params, np.asarray(x, np.float64), np.asarray(eps, np.float64))


def _log_normal(x, m, lv):
    return -0.5 * (np.log(2 * np.pi) + lv + (x - m) ** 2 / np.exp(lv))


def _log_student_t(x, nu, loc, scale):
    y = (x - loc) / scale
    return (special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2) - 0.5 * np.log(nu * np.pi)
            - np.log(scale) - (nu + 1) / 2 * np.log1p(y**2 / nu))


def loss(cfg, out, x, kl_weight=1.0, beta=1.0):
    """Negative ELBO per frame, MODELS.md 'Likelihoods and loss'."""
    x = np.asarray(x, np.float64)
    b, t_len, _ = x.shape
    if cfg.likelihood == "itakura_saito":
        y = np.exp(out["x_out"]) + 1e-10
        recon = np.sum(x / y - np.log(x / y) - 1)
    elif cfg.likelihood == "bernoulli":
        # log sigmoid(a) = -log(1 + exp(-a)), the Bernoulli log-probabilities of 1 and 0
        logits = out["x_out"]
        recon = -np.sum(x * -np.logaddexp(0.0, -logits) + (1 - x) * -np.logaddexp(0.0, logits))
    elif cfg.learn_x_var:
        recon = -np.sum(_log_normal(x, out["x_out"][..., : cfg.x_dim], out["x_out"][..., cfg.x_dim :]))
    else:
        recon = -np.sum(_log_normal(x, out["x_out"], cfg.fixed_x_logvar))
    mq, lq, mp, lp = out["mean_q"], out["logvar_q"], out["prior_loc"], out["prior_logvar"]
    if cfg.prior == "gaussian":
        kl = 0.5 * np.sum(lp - lq + (np.exp(lq) + (mq - mp) ** 2) / np.exp(lp) - 1)
    else:
        log_p = _log_student_t(out["z"], out["nu"], mp, np.exp(0.5 * lp))
        if cfg.kl_estimator == "entropy":
            kl = np.sum(-0.5 * (np.log(2 * np.pi) + 1 + lq) - log_p)
        else:
            kl = np.sum(_log_normal(out["z"], mq, lq) - log_p)
    n = b * t_len
    return recon / n + kl_weight * beta * kl / n, recon / n, kl / n
