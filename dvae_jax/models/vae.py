"""VAE (Kingma & Welling 2014) applied frame by frame, the DVAE review's baseline (vae.py there).

Nothing is recurrent: q(z_t | x_t) = N(mu, diag exp(logvar)) from an MLP of x_t (``dense_x_z``)
and two linear heads; the prior p(z_t) is N(0, I) (or the standard Student-t t(nu), loc 0 and
log-scale 0); the decoder p(x_t | z_t) is an MLP with the encoder's hidden sizes reversed, then
``gen_out``. Hoisted: the whole posterior for all frames; the scan only draws mu + std * eps.
After it: the prior (zeros) and the decoder, batched.

Generation: z_t are drawn independently from the prior and decoded together
(``feeds_back_x = False``). Primed generation reconstructs the prime, and the continuation does
not depend on the prime at all: the carry is empty.

The review crashes on ``dense_x_z = ''`` (it reads attributes it never set); here an empty list
means no hidden layer: the heads read x_t and ``gen_out`` reads z_t.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from dvae_jax.models import base, matmul
from dvae_jax.models.base import MLP, Dropout, Latent

Carry = tuple  # nothing crosses frames: ()


class Params(NamedTuple):
    """VAE parameters (the review's module names)."""

    posterior: MLP  # mlp_x_z + [inf_mean | inf_logvar]
    decoder: MLP  # mlp_z_x + gen_out


class Data(NamedTuple):
    """Per-step posterior parameters from the real frames (t, b, z)."""

    mean: Float[Array, "t b z"]
    logvar: Float[Array, "t b z"]
    frame: None = None  # no recurrence reads a frame


class VAE(base.DVAE):
    name = "vae"
    feeds_back_x = False
    review_cells_only = True

    def layout(self):
        cfg = self.cfg
        hidden = tuple(cfg.dense_x_z)
        return (
            ("posterior", ("mlp", (cfg.x_dim, *hidden, 2 * cfg.z_dim))),
            ("decoder", ("mlp", (cfg.z_dim, *reversed(hidden), base.decoder_out_dim(cfg)))),
        )

    def review_names(self) -> list:
        """The review's state_dict names of this layout (dvae_jax/interop.py)."""
        from dvae_jax import interop as io

        n = len(self.cfg.dense_x_z)
        return (io.heads_entries("mlp_x_z", ("inf_mean", "inf_logvar"), "posterior", n)
                + io.single_out_entries("mlp_z_x", "gen_out", "decoder", n))

    def params(self, variables: Any) -> Params:
        P = base.params_tree(variables)
        return matmul.cast_kernels(Params(base.read_mlp(P["posterior"]), base.read_mlp(P["decoder"])),
                                   self.cfg.matmul_dtype)

    def initial_carry(self, p: Params, n: int, dtype=jnp.float32) -> Carry:
        return ()

    def hoist(self, p: Params, x: Float[Array, "b t f"], carry: Carry, drop: Dropout,
              need_prior: bool, lengths: Array | None = None) -> tuple[Data, None]:
        # Batch-major through the wide input; only the narrow [mean | logvar] is transposed.
        a = base.time_major(base.mlp(p.posterior, x, self.act, final_act=False, drop=drop))
        return Data(*base.heads(a, self.cfg.z_dim, self.cfg.logvar_clip)), None

    def enter(self, p: Params, carry: Carry, data: Data | None, hoisted: bool,
              drop: Dropout) -> tuple[Carry, None]:
        return carry, None

    def latent(self, p: Params, carry: Carry, ctx: None, data: Data | None, noise: Array,
               posterior: bool, temperature, drop: Dropout) -> Latent:
        if posterior:
            return Latent(base.sample_posterior(data.mean, data.logvar, noise), data.mean, data.logvar)
        return Latent(base.sample_prior(0.0, jnp.zeros_like(noise), noise, temperature))

    def _decoder(self, p: Params, z: Float[Array, "... z"], drop: Dropout) -> Float[Array, "... o"]:
        return base.decoder_out(self.cfg, base.mlp(p.decoder, z, self.act, final_act=False, drop=drop))

    def emit(self, p: Params, ctx: None, zf: Array, drop: Dropout) -> Array:
        return self._decoder(p, zf, drop)

    def frame_in(self, p: Params, x: Array, drop: Dropout) -> Array:
        return x  # read by nothing: no recurrence

    def leave(self, p: Params, carry: Carry, ctx: None, zf: Array, frame: Array | None,
              drop: Dropout) -> Carry:
        return carry

    def record(self, ctx: None, zf: Array) -> None:
        return None

    def decode(self, p: Params, z: Float[Array, "t b z"], carry: Carry, drop: Dropout) -> tuple[Array, Carry]:
        return self._decoder(p, base.time_major(z), drop), carry

    def finish(self, p: Params, rec, z, carry0: Carry, drop: Dropout, x_out=None, lengths=None):
        zeros = jnp.zeros(base.time_major(z).shape, z.dtype)
        x_out = self.decode(p, z, carry0, drop)[0] if x_out is None else base.time_major(x_out)
        return zeros, zeros, x_out, None
