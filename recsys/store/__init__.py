"""The published database and its state: which run is served, staging, publish, rollback,
archive, the run ledger and the lock."""
