"""quota-bot core: the command layer, settings and configuration, providers, the quota service and
pool, history and forecast, scheduler, alerts, store, replicas, webhook and metrics.

Nothing in this package imports a chat platform library or ``adapters``; adapters import the core.
"""

__version__ = "0.1.0"
