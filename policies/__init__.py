"""pgverify policies: synthetic autoregressive policies whose expectations can be enumerated
exactly — ``TabularPolicy`` and ``MarkovPolicy`` (softmax tables with closed-form scores),
``GRUPolicy`` (a hand-written GRU) — plus ``perturb`` and the rewards and tasks in ``tasks``."""
