"""The engines: exact expectations by enumeration (``exact``), Monte Carlo with calibrated
intervals (``montecarlo``), and the engine's fused per-token bookkeeping (``kernels``: numba on
the CPU, each kernel with the torch reference it is tested against)."""
