"""Trainer conformance: what verl, TRL and OpenRLHF actually implement (``pgverify conform``).

One small declarative adapter per trainer (``verl.py``, ``trl.py``, ``openrlhf.py``) says, for
the trainer's **installed** package (never a copy of its code), which losses and options it has,
how to build its config and call its loss with pgverify's tensors, and which registry objective
(with which parameters) its documentation or paper names. ``_core.py`` runs ``pgverify check``
(``sims.check.api.check``) on every case and writes the conformance matrix (JSON schema in its
docstring, Markdown); ``readme.py`` renders the README's summary table from the committed
matrices under ``reports/conform/``; ``cli.py`` is the ``pgverify conform`` command.

Nothing here imports torch or a trainer at import time: the adapters import their trainer inside
``cases``.
"""

TRAINERS = ("verl", "trl", "openrlhf")

__all__ = ["TRAINERS"]
