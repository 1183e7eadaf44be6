import os

# Tests run on the CPU, deterministically, without grabbing every core for one test.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
