"""lineguard core: configuration, wire contracts, errors and the synthetic line.

Every part (``edge``, ``training``, ``labeling``, ``registry``, ``monitoring``) builds on these
names and on nothing of each other's internals; this package imports only the standard library,
pydantic, numpy, PyYAML and click, so any install of lineguard has it.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
