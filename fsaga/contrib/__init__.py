"""Optional integrations, each in a module of its own that imports its library when imported.

- `fsaga.contrib.opentelemetry`: traces of saga runs (``pip install fsaga[otel]``).

Importing this package imports none of them.
"""

__all__: list[str] = []
