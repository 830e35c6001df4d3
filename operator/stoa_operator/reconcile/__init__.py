"""One idempotent reconcile per kind: observe, build the desired children, apply, write status."""
