"""Platform adapters: each maps `/quota` (and later `/quota-schedule`) onto the core service and
renders the neutral ``QuotaReport`` in its platform's idiom. Adapters never talk to the upstream."""
