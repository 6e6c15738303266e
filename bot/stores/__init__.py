"""The stores, one module per variant, all answering the interface of ``common.StoreInterface``:
``sqlite`` (the embedded default) and ``postgres`` (``DATABASE_URL=postgres://…``). Import them through
``bot.store``."""
