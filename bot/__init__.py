"""quota-bot core: settings, upstream provider, quota service, scheduler and store.

Nothing in this package imports a chat platform library; adapters import the core.
"""

__version__ = "0.1.0"
