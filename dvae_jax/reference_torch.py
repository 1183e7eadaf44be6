"""PyTorch eager VRNN and SRNN in the review's layout, for parity tests and benchmarks only.

Written from /work/shared/spec/MODELS.md in the style of the review's code: (T, B, F) layout, one
``nn.Linear`` per head (``inf_mean`` / ``inf_logvar``, ``prior_mean`` / ``prior_logvar``,
``gen_out``), ``nn.Sequential`` MLPs whose layers are named ``linear{n}``, ``nn.LSTM`` recurrences,
and a Python loop over frames for the parts that are sequential (VRNN: inference, sampling,
phi_z, decoder and LSTM update per frame, as the review writes it; SRNN: the posterior chain).
The noise ``eps`` (T, B, Z) is an argument so that results can be compared with dvae_jax.

Built from any ``dvae_jax.config.ModelConfig``-like object (attribute access) with a Gaussian
prior; ``num_rnn`` > 1 uses a stacked ``nn.LSTM`` like the review. Differences from the review's
code, all of which are identities on the review's presets at sane values:
  * every log-variance is clamped to [-logvar_clip, logvar_clip] as dvae_jax does;
  * a Gaussian likelihood (not in the review's speech code) uses ``gen_out`` of width 2F
    ([mean | log-variance]) with ``learn_x_var``, width F (the mean) otherwise.
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

IS_EPS = 1e-10
LOG_2PI = math.log(2.0 * math.pi)


def _act(name: str) -> nn.Module:
    return {"tanh": nn.Tanh, "relu": nn.ReLU}[name]()


def _mlp(in_dim: int, sizes, act: str) -> tuple[nn.Sequential, int]:
    """The review's MLP: linear{n} + activation{n}; Identity when there are no layers."""
    d = OrderedDict()
    if not sizes:
        d["Identity"] = nn.Identity()
        return nn.Sequential(d), in_dim
    for n, size in enumerate(sizes):
        d[f"linear{n}"] = nn.Linear(in_dim if n == 0 else sizes[n - 1], size)
        d[f"activation{n}"] = _act(act)
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


class _Base(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        self.clip = float(cfg.logvar_clip)

    def _clamp(self, v: torch.Tensor) -> torch.Tensor:
        return v.clamp(-self.clip, self.clip)

    @staticmethod
    def reparameterization(mean, logvar, eps):
        return torch.addcmul(mean, eps, torch.exp(0.5 * logvar))

    def loss(self, x, out, beta: float = 1.0, kl_weight: float = 1.0):
        """The review's loss: recon and KL summed over everything, divided by T*B.

        Returns (loss, recon, kl)."""
        seq_len, batch = x.shape[:2]
        cfg = self.cfg
        if cfg.likelihood == "itakura_saito":
            y = torch.exp(out["y"]) + IS_EPS
            ratio = x / y
            recon = torch.sum(ratio - torch.log(ratio) - 1)
        else:
            if cfg.learn_x_var:
                mean, logvar = out["y"][..., : cfg.x_dim], self._clamp(out["y"][..., cfg.x_dim :])
            else:
                mean, logvar = out["y"], torch.full_like(out["y"], cfg.fixed_x_logvar)
            recon = 0.5 * torch.sum(LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))
        zm, zl, pm, pl = out["z_mean"], out["z_logvar"], out["z_mean_p"], out["z_logvar_p"]
        kl = -0.5 * torch.sum(zl - pl - torch.div(zl.exp() + (zm - pm).pow(2), pl.exp()) + 1)
        n = seq_len * batch
        recon, kl = recon / n, kl / n
        return recon + kl_weight * beta * kl, recon, kl


class VRNN(_Base):
    """The review's VRNN (speech layout by default); forward(x (T,B,F), eps (T,B,Z))."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.feature_extractor_x, dx = _mlp(cfg.x_dim, cfg.dense_x, cfg.activation)
        self.feature_extractor_z, dz = _mlp(cfg.z_dim, cfg.dense_z, cfg.activation)
        self.mlp_hx_z, d = _mlp(dx + cfg.dim_rnn, cfg.dense_hx_z, cfg.activation)
        self.inf_mean = nn.Linear(d, cfg.z_dim)
        self.inf_logvar = nn.Linear(d, cfg.z_dim)
        self.mlp_h_z, d = _mlp(cfg.dim_rnn, cfg.dense_h_z, cfg.activation)
        self.prior_mean = nn.Linear(d, cfg.z_dim)
        self.prior_logvar = nn.Linear(d, cfg.z_dim)
        self.mlp_hz_x, d = _mlp(dz + cfg.dim_rnn, cfg.dense_hz_x, cfg.activation)
        self.gen_out = nn.Linear(d, _gen_out_dim(cfg))
        self.rnn = _rnn(cfg, dx + dz, cfg.dim_rnn)

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> dict:
        cfg = self.cfg
        seq_len, batch, _ = x.shape
        z_mean = torch.zeros(seq_len, batch, cfg.z_dim)
        z_logvar = torch.zeros(seq_len, batch, cfg.z_dim)
        z = torch.zeros(seq_len, batch, cfg.z_dim)
        y = torch.zeros(seq_len, batch, self.gen_out.out_features)
        h = torch.zeros(seq_len, batch, cfg.dim_rnn)
        h_t = torch.zeros(cfg.num_rnn, batch, cfg.dim_rnn)
        c_t = torch.zeros(cfg.num_rnn, batch, cfg.dim_rnn)
        feature_x = self.feature_extractor_x(x)
        for t in range(seq_len):
            feature_xt = feature_x[t]
            h_last = h_t[-1]
            hx = self.mlp_hx_z(torch.cat((feature_xt, h_last), -1))
            mean_t, logvar_t = self.inf_mean(hx), self._clamp(self.inf_logvar(hx))
            z_t = self.reparameterization(mean_t, logvar_t, eps[t])
            feature_zt = self.feature_extractor_z(z_t)
            y_t = self.gen_out(self.mlp_hz_x(torch.cat((feature_zt, h_last), -1)))
            z_mean[t], z_logvar[t], z[t], y[t], h[t] = mean_t, logvar_t, z_t, y_t, h_last
            inp = torch.cat((feature_xt, feature_zt), -1).unsqueeze(0)
            if isinstance(self.rnn, nn.GRU):
                _, h_t = self.rnn(inp, h_t)
            else:
                _, (h_t, c_t) = self.rnn(inp, (h_t, c_t))
        hz = self.mlp_h_z(h)
        z_mean_p, z_logvar_p = self.prior_mean(hz), self._clamp(self.prior_logvar(hz))
        if cfg.likelihood == "itakura_saito":
            y = self._clamp(y)
        return {"y": y, "z": z, "z_mean": z_mean, "z_logvar": z_logvar, "z_mean_p": z_mean_p, "z_logvar_p": z_logvar_p}


class SRNN(_Base):
    """The review's SRNN (speech layout by default); forward(x (T,B,F), eps (T,B,Z))."""

    def __init__(self, cfg):
        super().__init__(cfg)
        H, G, Z = cfg.dim_rnn, cfg.dim_rnn_g, cfg.z_dim
        self.mlp_x_h, d = _mlp(cfg.x_dim, cfg.dense_x_h, cfg.activation)
        self.rnn_h = _rnn(cfg, d, H)
        self.share_x = bool(getattr(cfg, "share_x_embedding", False))
        d_xg = (cfg.dense_x_h[-1] if cfg.dense_x_h else cfg.x_dim) if self.share_x else cfg.x_dim
        self.mlp_hx_g, d = _mlp(H + d_xg, cfg.dense_hx_g, cfg.activation)
        self.rnn_g = _rnn(cfg, d, G)
        self.mlp_gz_z, d = _mlp(G + Z, cfg.dense_gz_z, cfg.activation)
        self.inf_mean = nn.Linear(d, Z)
        self.inf_logvar = nn.Linear(d, Z)
        self.mlp_hz_z, d = _mlp(H + Z, cfg.dense_hz_z, cfg.activation)
        self.prior_mean = nn.Linear(d, Z)
        self.prior_logvar = nn.Linear(d, Z)
        self.mlp_hz_x, d = _mlp(H + Z, cfg.dense_hz_x, cfg.activation)
        self.gen_out = nn.Linear(d, _gen_out_dim(cfg))
        self.resq = bool(getattr(cfg, "resq", False))

    def generation_z(self, h, z_tm1):
        a = self.mlp_hz_z(torch.cat((h, z_tm1), -1))
        return self.prior_mean(a), self._clamp(self.prior_logvar(a))

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> dict:
        cfg = self.cfg
        seq_len, batch, _ = x.shape
        Z = cfg.z_dim
        x_tm1 = torch.cat((torch.zeros(1, batch, cfg.x_dim), x[:-1]), 0)
        h, _ = self.rnn_h(self.mlp_x_h(x_tm1))
        hx_g = self.mlp_hx_g(torch.cat((h, self.mlp_x_h(x) if self.share_x else x), -1))
        g, _ = self.rnn_g(torch.flip(hx_g, [0]))
        g = torch.flip(g, [0])
        z_mean = torch.zeros(seq_len, batch, Z)
        z_logvar = torch.zeros(seq_len, batch, Z)
        z = torch.zeros(seq_len, batch, Z)
        z_t = torch.zeros(batch, Z)
        for t in range(seq_len):
            gz = self.mlp_gz_z(torch.cat((g[t], z_t), -1))
            mean_t, logvar_t = self.inf_mean(gz), self._clamp(self.inf_logvar(gz))
            if self.resq:
                mean_t = mean_t + self.generation_z(h[t], z_t)[0]
            z_t = self.reparameterization(mean_t, logvar_t, eps[t])
            z_mean[t], z_logvar[t], z[t] = mean_t, logvar_t, z_t
        z_tm1 = torch.cat((torch.zeros(1, batch, Z), z[:-1]), 0)
        z_mean_p, z_logvar_p = self.generation_z(h, z_tm1)
        y = self.gen_out(self.mlp_hz_x(torch.cat((h, z), -1)))
        if cfg.likelihood == "itakura_saito":
            y = self._clamp(y)
        return {"y": y, "z": z, "z_mean": z_mean, "z_logvar": z_logvar, "z_mean_p": z_mean_p, "z_logvar_p": z_logvar_p}


def build(cfg) -> _Base:
    if cfg.model == "vrnn":
        return VRNN(cfg)
    if cfg.model == "srnn":
        return SRNN(cfg)
    raise ValueError(f"unknown model {cfg.model!r}")
