"""Recovery: what happens when a worker dies, a broker forgets, or work comes due.

- `sweeper`: the sweep, run by every worker process and `ferry dev`: reclaims attempts
  whose lease expired, sends due delayed and retrying invocations, and sends again what
  the broker lost (`Sweep`), on a thread (`SweepThread`);
- `leases`: short leases the worker renews while its attempts run (`LeaseKeeper`);
- `heartbeat`: each worker process's row in the store, and marking dead ones lost
  (their attempts' leases end at once).

The SQL of all three is in `runtime.store.sweep`, `runtime.store.leases` and
`runtime.store.workers`.
"""
