"""Framework backends: ``backends.torch``, ``backends.paddle``, ``backends.flax``.

Each is imported on its own and imports only its own framework, so that a machine with one framework installed
can use that backend. The three expose the same names with the same arguments.
"""
