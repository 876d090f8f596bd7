"""Peer implementations: other people's code for the same math, timed side by side with the project's modules.

NOT part of the library: nothing under ``attn_core``, ``backends`` or ``conformance`` imports this package (the
tests may, to check against the same code), and these classes are not the project's modules. They are the seed
articles' code, re-typed as their users wrote it (names, ``super(...).__init__()``, ``.pow(2)``, ``expand_as``, the
hidden width ``C // r`` with its silent 0 for C < 16), timm's modules and the published code of the modules timm
lacks, plus straight transcriptions of them into the frameworks where their authors have none:

- :mod:`.seed_torch`: seed 001 ``SEModule``, seed 002 ``SELayer``, ``ChannelAttention``, ``SpatialAttention``,
  ``CBAM``, seed 004 ``eca_layer``, and SimAM as seed 003 would read in torch;
- :mod:`.seed_paddle`: seed 003 ``simam_module`` (Paddle, with ``.pow(2)``) and Paddle transcriptions of the torch
  seeds;
- :mod:`.jax_numpy`: jax.numpy transcriptions of the seeds and of timm's modules beyond those (NHWC), pure functions
  of a parameter dict;
- :mod:`.paddle_timm`: timm's modules beyond the seeds' transcribed to Paddle, built by timm's ``create_attn`` key;
- :mod:`.published_torch`: the published torch code of the modules timm lacks (the authors' ``SRMLayer``, ``GCT``,
  ``sa_layer``, ``TripletAttention``, ``BAM``, ``PSA_p`` and ``PSA_s``; GAM's tutorials' copy, its authors having
  published none), one factory per module, which the tests check against the project's modules too;
  :mod:`.published_paddle` and :mod:`.published_jax` are its transcriptions;
- :mod:`.timm_peers`: timm's ``SEModule``, ``EcaModule``, ``ChannelAttn``, ``SpatialAttn``, ``CbamModule`` and every
  module ``create_attn(key, C)`` builds for a key of ``benchmarks.plan.TIMM_NAMED``, when ``import timm`` works
  (through :mod:`._timm`, which the tests' timm parity checks import too).

Each module also says how the project's canonical weights (``attn_core`` names, torch layout) map onto each peer's
own parameters, so that a peer and the project's module compute with identical weights.
"""
