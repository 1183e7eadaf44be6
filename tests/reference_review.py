"""Float64 NumPy references of the review's VAE, DKF, STORN, RVAE and DSAE: plain loops over time
written from the review's modules (dvae/model/{vae,dkf,storn,rvae,dsae}.py of
XiaoyuBIE1994/DVAE; the equations are in docs/models.md).

They read the review's own *state_dict* (torch names, (out, in) weights), which the tests make
from dvae_jax's parameters with ``interop.variables_to_state_dict``: so they share nothing with
the JAX code but the values, and they check the name mapping too. Every layer fed a
concatenation is applied to the concatenation, every recurrence is stepped one frame at a time
(backward-in-time ones as the review runs them: flip, forward LSTM, flip back).

``forward(cfg, sd, x, noise)``: x (b, t, f), noise (b, t, noise_dim) as dvae_jax's drivers take
it (z's standard noise per frame, then, DSAE, v's at frame 0). Returns batch-major arrays: z,
mean_q, logvar_q, prior_loc, prior_logvar, x_out (and, DSAE, v, mean_v, logvar_v), and the
recurrent states the next frame would read under ``final``.
"""

from __future__ import annotations

import numpy as np

from tests import reference_numpy as base_ref


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def _relu(a):
    return np.maximum(a, 0.0)


def _softplus(a):
    return np.log1p(np.exp(a))


def _lin(sd, name, a):
    return a @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _mlp(sd, name, a, n, act):
    """The review's MLP: linear{i} then the activation, n layers (n = 0: identity)."""
    for i in range(n):
        a = act(_lin(sd, f"{name}.linear{i}", a))
    return a


def _cell(sd, name, layer, suffix, inp, h, c):
    """One step of layer ``layer`` of nn.LSTM (4H gates) or nn.RNN tanh (H rows)."""
    wi, wh = sd[f"{name}.weight_ih_l{layer}{suffix}"], sd[f"{name}.weight_hh_l{layer}{suffix}"]
    pre = inp @ wi.T + sd[f"{name}.bias_ih_l{layer}{suffix}"] + h @ wh.T + sd[f"{name}.bias_hh_l{layer}{suffix}"]
    if wi.shape[0] == wh.shape[1]:  # nn.RNN
        return np.tanh(pre), c
    i, f, g, o = np.split(pre, 4, axis=-1)
    c = _sig(f) * c + _sig(i) * np.tanh(g)
    return _sig(o) * np.tanh(c), c


def rnn(sd, name, xs, layers=1, reverse=False, suffix="", state=None):
    """A stacked recurrence over xs (t, b, i), one direction: (outputs (t, b, H), [(h, c)] per layer
    after the last step). ``reverse``: from the last frame back."""
    hidden = sd[f"{name}.weight_hh_l0{suffix}"].shape[1]
    t_len, b = xs.shape[:2]
    states = state or [(np.zeros((b, hidden)), np.zeros((b, hidden))) for _ in range(layers)]
    out = np.zeros((t_len, b, hidden))
    order = range(t_len - 1, -1, -1) if reverse else range(t_len)
    for t in order:
        inp = xs[t]
        for k in range(layers):
            h, c = _cell(sd, name, k, suffix, inp, *states[k])
            states[k] = (h, c)
            inp = h
        out[t] = inp
    return out, states


def birnn(sd, name, xs, layers=1):
    """nn.LSTM(bidirectional=True): layer k of each direction reads [fwd, bwd] of layer k-1.
    Returns (outputs [fwd | bwd] (t, b, 2H), forward top state after frame T, backward top
    state after frame 1)."""
    inp = xs
    for k in range(layers):
        f, st_f = _one_layer(sd, name, k, "", inp, False)
        b, st_b = _one_layer(sd, name, k, "_reverse", inp, True)
        inp = np.concatenate([f, b], -1)
    return inp, st_f, st_b


def _one_layer(sd, name, k, suffix, xs, reverse):
    hidden = sd[f"{name}.weight_hh_l{k}{suffix}"].shape[1]
    t_len, b = xs.shape[:2]
    h, c = np.zeros((b, hidden)), np.zeros((b, hidden))
    out = np.zeros((t_len, b, hidden))
    for t in (range(t_len - 1, -1, -1) if reverse else range(t_len)):
        h, c = _cell(sd, name, k, suffix, xs[t], h, c)
        out[t] = h
    return out, (h, c)


def _clip(cfg, lv):
    return np.clip(lv, -cfg.logvar_clip, cfg.logvar_clip)


def _heads(cfg, sd, names, a):
    return _lin(sd, names[0], a), _clip(cfg, _lin(sd, names[1], a))


def _standard_prior(z):
    return np.zeros_like(z), np.zeros_like(z)


def _out(cfg, z, mq, lq, mp, lp, y, final=None, **extra):
    tb = lambda a: np.swapaxes(a, 0, 1)
    out = {"z": tb(z), "mean_q": tb(mq), "logvar_q": tb(lq), "prior_loc": tb(mp), "prior_logvar": tb(lp),
               "x_out": tb(base_ref._decoder(cfg, y)), "final": final}
    out.update(extra)
    return out


# ---------------------------------------------------------------------------------------------


def vae(cfg, sd, x, eps, act):
    n = len(cfg.dense_x_z)
    a = _mlp(sd, "mlp_x_z", x, n, act)
    mq, lq = _heads(cfg, sd, ("inf_mean", "inf_logvar"), a)
    z = mq + np.exp(0.5 * lq) * eps
    y = _lin(sd, "gen_out", _mlp(sd, "mlp_z_x", z, n, act))
    return _out(cfg, z, mq, lq, *_standard_prior(z), y)


def dkf(cfg, sd, x, eps, act):
    t_len, b = x.shape[:2]
    a = _mlp(sd, "mlp_x_gx", x, len(cfg.dense_x_gx), act)
    if cfg.bidir_gx:
        g, _, _ = birnn(sd, "rnn_gx", a, cfg.num_rnn_gx)
        half = cfg.dim_rnn_gx
        g_sum, div = g[..., :half] + g[..., half:], 3.0
    else:
        g_sum, div = rnn(sd, "rnn_gx", a, cfg.num_rnn_gx, reverse=True)[0], 2.0
    z_prev = np.zeros((b, cfg.z_dim))
    zs, mqs, lqs = [], [], []
    for t in range(t_len):
        m = _mlp(sd, "mlp_ztm1_g", z_prev, len(cfg.dense_ztm1_g), act)
        m = act(_lin(sd, "mlp_ztm1_g.linear_last", m))
        c = _mlp(sd, "mlp_g_z", (m + g_sum[t]) / div, len(cfg.dense_g_z), act)
        mq, lq = _heads(cfg, sd, ("inf_mean", "inf_logvar"), c)
        z_prev = mq + np.exp(0.5 * lq) * eps[t]
        zs.append(z_prev), mqs.append(mq), lqs.append(lq)
    z = np.stack(zs)
    z_tm1 = np.concatenate([np.zeros((1, b, cfg.z_dim)), z[:-1]])
    mp, lp = dkf_prior(cfg, sd, z_tm1)
    y = _lin(sd, "gen_out", _mlp(sd, "mlp_z_x", z, len(cfg.dense_z_x), act))
    return _out(cfg, z, np.stack(mqs), np.stack(lqs), mp, lp, y, final={"z_prev": z[-1]})


def dkf_prior(cfg, sd, z_tm1):
    """The gated transition p(z_t | z_{t-1}) (ReLU, sigmoid and softplus fixed in the review)."""
    gate = _sig(_lin(sd, "mlp_gate.linear2", _relu(_lin(sd, "mlp_gate.linear1", z_tm1))))
    prop = _lin(sd, "mlp_z_prop.linear2", _relu(_lin(sd, "mlp_z_prop.linear1", z_tm1)))
    mp = (1 - gate) * _lin(sd, "prior_mean", z_tm1) + gate * prop
    lp = np.log(_softplus(_lin(sd, "prior_logvar.1", _relu(prop))))
    return mp, _clip(cfg, lp)


def storn(cfg, sd, x, eps, act):
    b = x.shape[1]
    g, _ = rnn(sd, "rnn_g", _mlp(sd, "mlp_x_g", x, len(cfg.dense_x_g), act), cfg.num_rnn_g)
    mq, lq = _heads(cfg, sd, ("inf_mean", "inf_logvar"), _mlp(sd, "mlp_g_z", g, len(cfg.dense_g_z), act))
    z = mq + np.exp(0.5 * lq) * eps
    x_tm1 = np.concatenate([np.zeros((1, b, x.shape[-1])), x[:-1]])
    zx = np.concatenate([_mlp(sd, "mlp_z_h", z, len(cfg.dense_z_h), act),
                         _mlp(sd, "mlp_xtm1_h", x_tm1, len(cfg.dense_xtm1_h), act)], -1)
    h, state = rnn(sd, "rnn_h", zx, cfg.num_rnn_h)
    y = _lin(sd, "gen_out", _mlp(sd, "mlp_h_x", h, len(cfg.dense_h_x), act))
    return _out(cfg, z, mq, lq, *_standard_prior(z), y, final={"rnn_h": state, "x_prev": x[-1]})


def rvae(cfg, sd, x, eps, act):
    t_len, b = x.shape[:2]
    a = _mlp(sd, "mlp_x_gx", x, len(cfg.dense_x_gx), act)
    if cfg.bidir_g_x:  # the review runs the bidirectional LSTM on the flipped sequence
        g, _, _ = birnn(sd, "rnn_g_x", a[::-1], cfg.num_rnn_g_x)
        g_x = g[::-1]
    else:
        g_x = rnn(sd, "rnn_g_x", a, cfg.num_rnn_g_x, reverse=True)[0]
    z_prev = np.zeros((b, cfg.z_dim))
    state = None
    zs, mqs, lqs = [], [], []
    for t in range(t_len):
        u = _mlp(sd, "mlp_z_gz", z_prev, len(cfg.dense_z_gz), act)[None]
        g_z, state = rnn(sd, "rnn_g_z", u, cfg.num_rnn_g_z, state=state)
        c = _mlp(sd, "mlp_g_z", np.concatenate([g_x[t], g_z[0]], -1), len(cfg.dense_g_z), act)
        mq, lq = _heads(cfg, sd, ("inf_mean", "inf_logvar"), c)
        z_prev = mq + np.exp(0.5 * lq) * eps[t]
        zs.append(z_prev), mqs.append(mq), lqs.append(lq)
    z = np.stack(zs)
    zh = _mlp(sd, "mlp_z_h", z, len(cfg.dense_z_h), act)
    if cfg.bidir_h:
        h, h_state, _ = birnn(sd, "rnn_h", zh, cfg.num_rnn_h)
    else:
        h, h_state = rnn(sd, "rnn_h", zh, cfg.num_rnn_h)
    y = _lin(sd, "gen_out", _mlp(sd, "mlp_h_x", h, len(cfg.dense_h_x), act))
    return _out(cfg, z, np.stack(mqs), np.stack(lqs), *_standard_prior(z), y,
                final={"rnn_g_z": state, "z_prev": z[-1], "rnn_h": h_state})


def dsae(cfg, sd, x, eps, eps_v, act):
    t_len, b = x.shape[:2]
    f = _mlp(sd, "mlp_x", x, len(cfg.dense_x), act)
    _, (h_f, _), (h_b, _) = birnn(sd, "rnn_g_v", f, cfg.num_rnn_gv)
    s = _mlp(sd, "mlp_gv_v", np.concatenate([h_f, h_b], -1), len(cfg.dense_gv_v), act)
    mv, lv = _heads(cfg, sd, ("inf_v_mean", "inf_v_logvar"), s)
    v = mv + np.exp(0.5 * lv) * eps_v
    vs = np.broadcast_to(v, (t_len, b, v.shape[-1]))
    g = _mlp(sd, "mlp_xv_gxv", np.concatenate([f, vs], -1), len(cfg.dense_xv_gxv), act)
    g, _, _ = birnn(sd, "rnn_g_xv", g, cfg.num_rnn_gxv)
    g = _mlp(sd, "mlp_gxv_gz", g, len(cfg.dense_gxv_gz), act)
    r, _ = rnn(sd, "rnn_g_z", g, cfg.num_rnn_gz)
    mq, lq = _heads(cfg, sd, ("inf_z_mean", "inf_z_logvar"), r)
    z = mq + np.exp(0.5 * lq) * eps
    z_tm1 = np.concatenate([np.zeros((1, b, cfg.z_dim)), z[:-1]])
    q, state = rnn(sd, "rnn_prior", z_tm1, cfg.num_rnn_prior)
    mp, lp = _heads(cfg, sd, ("prior_mean", "prior_logvar"), q)
    y = _lin(sd, "gen_out", _mlp(sd, "mlp_vz_x", np.concatenate([vs, z], -1), len(cfg.dense_vz_x), act))
    return _out(cfg, z, mq, lq, mp, lp, y, final={"v": v, "rnn_prior": state, "z_prev": z[-1]},
                v=v, mean_v=mv, logvar_v=lv)


def forward(cfg, sd, x, noise):
    """See the module docstring."""
    sd = {k: np.asarray(a, np.float64) for k, a in sd.items()}
    x = np.swapaxes(np.asarray(x, np.float64), 0, 1)
    noise = np.asarray(noise, np.float64)
    eps = np.swapaxes(noise[..., :cfg.z_dim], 0, 1)
    act = base_ref._act(cfg.activation)
    if cfg.model == "dsae":
        out = dsae(cfg, sd, x, eps, noise[:, 0, cfg.z_dim:], act)
    else:
        out = {"vae": vae, "dkf": dkf, "storn": storn, "rvae": rvae}[cfg.model](cfg, sd, x, eps, act)
    out["nu"] = base_ref._nu(cfg, sd)
    return out


def loss(cfg, out, x, kl_weight=1.0, beta=1.0):
    """Negative ELBO per frame (reference_numpy.loss) plus, DSAE, KL(q(v) || N(0, I)) of each
    sequence over the same b * t frames (the review's loss_KLD(v) / (T * B))."""
    total, recon, kl = base_ref.loss(cfg, out, x, kl_weight, beta)
    if "mean_v" in out:
        m, lv = out["mean_v"], out["logvar_v"]
        kl_v = 0.5 * np.sum(-lv + np.exp(lv) + m ** 2 - 1) / (x.shape[0] * x.shape[1])
        total, kl = total + kl_weight * beta * kl_v, kl + kl_v
    return total, recon, kl
