"""PyTorch eager VRNN and SRNN doing the review's operations, for parity tests and benchmarks only.

Written from /work/shared/spec/MODELS.md and the review's published code (its layout, names and
sequence of tensor operations; no code copied): (T, B, F) layout, one ``nn.Linear`` per head
(``inf_mean`` / ``inf_logvar``, ``prior_mean`` / ``prior_logvar``, ``gen_out``), ``nn.Sequential``
MLPs whose layers are named ``linear{n}`` followed by ``activation{n}`` and ``dropout{n}``,
``nn.LSTM`` recurrences, and a Python loop over frames for the parts that are sequential (VRNN:
inference, sampling, phi_z, decoder and an ``nn.LSTM`` call on a length-1 sequence per frame, on
(1, B, .) slices; SRNN: the posterior chain). The loss is the review's training loop's: ``exp`` of
the decoder's log-power, ``y + 1e-10``, ``sum(x/y - log(x/y) - 1)`` (x/y formed twice, as there),
and the KL with ``exp(logvar_p) + 1e-10`` in the denominator. Because ``bench`` times this module
as "the review's code", every such detail counts: see benchmarks/RESULTS.md for what each costs.

The noise ``eps`` (T, B, Z) is an optional argument so that results can be compared with
dvae_jax; without it each frame draws ``torch.randn_like`` as the review does.

Built from any ``dvae_jax.config.ModelConfig``-like object (attribute access) with a Gaussian
prior; ``num_rnn`` > 1 uses a stacked ``nn.LSTM`` like the review. Differences from the review's
code, none of which changes its speech presets' gradients:
  * ``loss`` returns the true KL: the review's sum omits the constant ``+1`` inside it, so its KL
    is z_dim / 2 nats per frame higher; the constant is taken off the summed scalar (no extra
    tensor operation, same gradients);
  * a Gaussian likelihood (not in the review's speech code) uses ``gen_out`` of width 2F
    ([mean | log-variance]) with ``learn_x_var``, width F (the mean) otherwise; options the
    review lacks (``resq``, ``share_x_embedding``, ``rnn_cell=gru``) follow MODELS.md.
Difference from dvae_jax: dvae_jax clips every log-variance to [-logvar_clip, logvar_clip] (40
by default); this module does not, as the review does not (an identity at the values the parity
tests meet, and at any sane training state).
"""

from __future__ import annotations

import math
from collections import OrderedDict

from dvae_jax import errors

try:
    import torch
    from torch import nn
except ImportError:  # an optional extra: say how to get it instead of a bare traceback
    raise errors.DvaeError(
        "the PyTorch reference needs PyTorch, an optional extra: pip install 'dvae-jax[torch]'"
    ) from None

REVIEW_EPS = 1e-10
LOG_2PI = math.log(2.0 * math.pi)


def _act(name: str) -> nn.Module:
    return {"tanh": nn.Tanh, "relu": nn.ReLU}[name]()


def _mlp(in_dim: int, sizes, act: str, dropout: float = 0.0) -> tuple[nn.Sequential, int]:
    """The review's MLP: linear{n}, activation{n}, dropout{n}; Identity when there are no layers.

    The dropout modules are there because the review's are (at p = 0 in training mode each is a
    module call that returns its input); dvae_jax's parity holds at p = 0 only."""
    d = OrderedDict()
    if not sizes:
        d["Identity"] = nn.Identity()
        return nn.Sequential(d), in_dim
    for n, size in enumerate(sizes):
        d[f"linear{n}"] = nn.Linear(in_dim if n == 0 else sizes[n - 1], size)
        d[f"activation{n}"] = _act(act)
        d[f"dropout{n}"] = nn.Dropout(p=dropout)
    return nn.Sequential(d), sizes[-1]


def _rnn(cfg, in_dim: int, hidden: int) -> nn.Module:
    """nn.LSTM (the review's), or nn.GRU with model.rnn_cell=gru (the SRNN code's cell)."""
    cell = nn.GRU if getattr(cfg, "rnn_cell", "lstm") == "gru" else nn.LSTM
    return cell(in_dim, hidden, cfg.num_rnn)


def _gen_out_dim(cfg) -> int:
    if cfg.likelihood == "itakura_saito":
        return cfg.x_dim
    if cfg.likelihood == "gaussian":
        return 2 * cfg.x_dim if cfg.learn_x_var else cfg.x_dim
    raise ValueError(f"unknown likelihood {cfg.likelihood!r}")


def _check(cfg) -> None:
    if getattr(cfg, "prior", "gaussian") != "gaussian":
        raise ValueError("the PyTorch reference implements the Gaussian prior only")


def loss_is(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed Itakura-Saito divergence of power x from power y, with the review's operations."""
    y = y + REVIEW_EPS
    return torch.sum(x / y - torch.log(x / y) - 1)


def loss_kl_review(zm, zl, pm, pl) -> torch.Tensor:
    """The review's summed Gaussian KL, without the +1 inside (z_dim/2 nats per frame high)."""
    return -0.5 * torch.sum(zl - pl - torch.div(zl.exp() + (zm - pm).pow(2), pl.exp() + REVIEW_EPS))


class _Base(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        self.drop = float(getattr(cfg, "dropout_p", 0.0))

    def _mlp(self, in_dim: int, sizes) -> tuple[nn.Sequential, int]:
        return _mlp(in_dim, sizes, self.cfg.activation, self.drop)

    @staticmethod
    def reparameterization(mean, logvar, eps=None):
        std = torch.exp(0.5 * logvar)
        if eps is None:  # the review draws each frame's noise here
            eps = torch.randn_like(std)
        return torch.addcmul(mean, eps, std)

    def loss(self, x, out, beta: float = 1.0, kl_weight: float = 1.0):
        """The review's loss: recon and KL summed over everything, divided by T*B.

        Returns (loss, recon, kl) with the true KL (see the module docstring)."""
        seq_len, batch = x.shape[:2]
        cfg = self.cfg
        if cfg.likelihood == "itakura_saito":
            recon = loss_is(x, torch.exp(out["y"]))  # the decoder outputs a log-power
        else:
            if cfg.learn_x_var:
                mean, logvar = out["y"][..., : cfg.x_dim], out["y"][..., cfg.x_dim :]
            else:
                mean, logvar = out["y"], torch.full_like(out["y"], cfg.fixed_x_logvar)
            recon = 0.5 * torch.sum(LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))
        zm = out["z_mean"]
        kl = loss_kl_review(zm, out["z_logvar"], out["z_mean_p"], out["z_logvar_p"])
        kl = kl - 0.5 * zm.numel()  # the +1 the review's sum leaves out: a scalar, same gradient
        n = seq_len * batch
        recon, kl = recon / n, kl / n
        return recon + kl_weight * beta * kl, recon, kl


class VRNN(_Base):
    """The review's VRNN (speech layout by default); forward(x (T,B,F), eps (T,B,Z) or None)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.feature_extractor_x, dx = self._mlp(cfg.x_dim, cfg.dense_x)
        self.feature_extractor_z, dz = self._mlp(cfg.z_dim, cfg.dense_z)
        self.mlp_hx_z, d = self._mlp(dx + cfg.dim_rnn, cfg.dense_hx_z)
        self.inf_mean = nn.Linear(d, cfg.z_dim)
        self.inf_logvar = nn.Linear(d, cfg.z_dim)
        self.mlp_h_z, d = self._mlp(cfg.dim_rnn, cfg.dense_h_z)
        self.prior_mean = nn.Linear(d, cfg.z_dim)
        self.prior_logvar = nn.Linear(d, cfg.z_dim)
        self.mlp_hz_x, d = self._mlp(dz + cfg.dim_rnn, cfg.dense_hz_x)
        self.gen_out = nn.Linear(d, _gen_out_dim(cfg))
        self.rnn = _rnn(cfg, dx + dz, cfg.dim_rnn)
        self.gru = isinstance(self.rnn, nn.GRU)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> dict:
        cfg = self.cfg
        seq_len, batch, _ = x.shape
        dev = x.device  # the review allocates on the CPU and moves (a no-op there), as here
        n_rnn, hid = cfg.num_rnn, cfg.dim_rnn
        z_mean = torch.zeros(seq_len, batch, cfg.z_dim).to(dev)
        z_logvar = torch.zeros(seq_len, batch, cfg.z_dim).to(dev)
        y = torch.zeros(seq_len, batch, self.gen_out.out_features).to(dev)
        z = torch.zeros(seq_len, batch, cfg.z_dim).to(dev)
        h = torch.zeros(seq_len, batch, hid).to(dev)
        h_t = torch.zeros(n_rnn, batch, hid).to(dev)
        c_t = torch.zeros(n_rnn, batch, hid).to(dev)
        feature_x = self.feature_extractor_x(x)
        for t in range(seq_len):  # every tensor in the loop is (1, B, .), as in the review
            feature_xt = feature_x[t, :, :].unsqueeze(0)
            h_t_last = h_t.view(n_rnn, 1, batch, hid)[-1, :, :, :]
            hx = self.mlp_hx_z(torch.cat((feature_xt, h_t_last), 2))
            mean_zt, logvar_zt = self.inf_mean(hx), self.inf_logvar(hx)
            z_t = self.reparameterization(mean_zt, logvar_zt, None if eps is None else eps[t])
            feature_zt = self.feature_extractor_z(z_t)
            y_t = self.gen_out(self.mlp_hz_x(torch.cat((feature_zt, h_t_last), 2)))
            z_mean[t, :, :] = mean_zt
            z_logvar[t, :, :] = logvar_zt
            z[t, :, :] = torch.squeeze(z_t)
            y[t, :, :] = torch.squeeze(y_t)
            h[t, :, :] = torch.squeeze(h_t_last)
            rnn_input = torch.cat((feature_xt, feature_zt), -1)
            if self.gru:
                _, h_t = self.rnn(rnn_input, h_t)
            else:
                _, (h_t, c_t) = self.rnn(rnn_input, (h_t, c_t))
        hz = self.mlp_h_z(h)
        z_mean_p, z_logvar_p = self.prior_mean(hz), self.prior_logvar(hz)
        return _outputs(y, z, z_mean, z_logvar, z_mean_p, z_logvar_p)


class SRNN(_Base):
    """The review's SRNN (speech layout by default); forward(x (T,B,F), eps (T,B,Z) or None)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        H, G, Z = cfg.dim_rnn, cfg.dim_rnn_g, cfg.z_dim
        self.mlp_x_h, d = self._mlp(cfg.x_dim, cfg.dense_x_h)
        self.rnn_h = _rnn(cfg, d, H)
        self.share_x = bool(getattr(cfg, "share_x_embedding", False))
        d_xg = (cfg.dense_x_h[-1] if cfg.dense_x_h else cfg.x_dim) if self.share_x else cfg.x_dim
        self.mlp_hx_g, d = self._mlp(H + d_xg, cfg.dense_hx_g)
        self.rnn_g = _rnn(cfg, d, G)
        self.mlp_gz_z, d = self._mlp(G + Z, cfg.dense_gz_z)
        self.inf_mean = nn.Linear(d, Z)
        self.inf_logvar = nn.Linear(d, Z)
        self.mlp_hz_z, d = self._mlp(H + Z, cfg.dense_hz_z)
        self.prior_mean = nn.Linear(d, Z)
        self.prior_logvar = nn.Linear(d, Z)
        self.mlp_hz_x, d = self._mlp(H + Z, cfg.dense_hz_x)
        self.gen_out = nn.Linear(d, _gen_out_dim(cfg))
        self.resq = bool(getattr(cfg, "resq", False))

    def generation_z(self, h, z_tm1):
        a = self.mlp_hz_z(torch.cat((h, z_tm1), -1))
        return self.prior_mean(a), self.prior_logvar(a)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> dict:
        cfg = self.cfg
        seq_len, batch, _ = x.shape
        dev = x.device
        Z = cfg.z_dim
        x_tm1 = torch.cat((torch.zeros(1, batch, cfg.x_dim).to(dev), x[:-1, :, :]), 0)
        h, _ = self.rnn_h(self.mlp_x_h(x_tm1))
        z_mean = torch.zeros(seq_len, batch, Z).to(dev)
        z_logvar = torch.zeros(seq_len, batch, Z).to(dev)
        z = torch.zeros(seq_len, batch, Z).to(dev)
        z_t = torch.zeros(batch, Z).to(dev)
        hx_g = self.mlp_hx_g(torch.cat((h, self.mlp_x_h(x) if self.share_x else x), -1))
        g_inverse, _ = self.rnn_g(torch.flip(hx_g, [0]))
        g = torch.flip(g_inverse, [0])
        for t in range(seq_len):  # the review writes into z_mean / z_logvar and reads them back
            gz = self.mlp_gz_z(torch.cat((g[t, :, :], z_t), -1))
            z_mean[t, :, :] = self.inf_mean(gz)
            z_logvar[t, :, :] = self.inf_logvar(gz)
            if self.resq:
                z_mean[t, :, :] = z_mean[t, :, :] + self.generation_z(h[t], z_t)[0]
            z_t = self.reparameterization(
                z_mean[t, :, :], z_logvar[t, :, :], None if eps is None else eps[t]
            )
            z[t, :, :] = z_t
        z_tm1 = torch.cat((torch.zeros(1, batch, Z).to(dev), z[:-1, :, :]), 0)
        z_mean_p, z_logvar_p = self.generation_z(h, z_tm1)
        y = self.gen_out(self.mlp_hz_x(torch.cat((h, z), -1)))
        return _outputs(y, z, z_mean, z_logvar, z_mean_p, z_logvar_p)


def _outputs(y, z, z_mean, z_logvar, z_mean_p, z_logvar_p) -> dict:
    """What forward returns: the decoder output, the samples, posterior and prior parameters."""
    return {"y": y, "z": z, "z_mean": z_mean, "z_logvar": z_logvar, "z_mean_p": z_mean_p,
            "z_logvar_p": z_logvar_p}


def build(cfg) -> _Base:
    if cfg.model == "vrnn":
        return VRNN(cfg)
    if cfg.model == "srnn":
        return SRNN(cfg)
    raise ValueError(f"unknown model {cfg.model!r}")
