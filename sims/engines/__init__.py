"""The engines: exact expectations by enumeration (``exact``), Monte Carlo with calibrated
intervals (``montecarlo``), the engine's fused per-token bookkeeping (``kernels``) and its fused
per-objective gradient weights (``weights``): numba on the CPU, each kernel with the reference
it is tested against (torch operations; for ``weights``, the registered objective's autograd)."""
