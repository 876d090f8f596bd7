"""Benchmarks of the attention modules: ``python -m benchmarks`` (see ``--help`` and ``benchmarks/RESULTS.md``).

For every module x backend x shape x mode, the module's forward and forward+backward are timed against the
framework's ``x * s`` (SE's last operation) and against peer implementations of the same math (the seed articles'
code, timm's modules, transcriptions; ``benchmarks/peers``) loaded with the same weights, interleaved, with the
output differences shown beside the times. It measures; it does not judge, and no test times anything.

Not part of the library: ``attn_core``, ``backends`` and ``conformance`` never import it.
"""
