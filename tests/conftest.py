import os
import tempfile

# Tests run on the CPU, deterministically, without grabbing every core for one test.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Test programs are tiny and compiled once each: XLA's compile time, not run time, dominates the
# suite, and the cheaper backend passes halve it (measured: 120 s -> 66 s on one test group).
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0 "
    "--xla_llvm_disable_expensive_passes=true",
)
# One persistent compilation cache for the session (and the subprocesses it starts): the same
# tiny programs are compiled by many tests; a fresh directory per session keeps runs independent.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="dvae_jax_xla_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
