"""lineguard.monitoring: metric definitions, drift detection and alert rules.

Every other part records into ``Metrics``; nothing here imports torch, so it runs on the edge.
"""

from lineguard.monitoring.metrics import STAGES, Metrics

__all__ = ["STAGES", "Metrics"]
