"""Providers: where readings come from, one module per provider behind one interface (``base.Provider``)."""
