"""dvae_jax: Dynamical Variational Autoencoders (VRNN, SRNN) on speech in JAX/Flax."""

__version__ = "0.1.0"
