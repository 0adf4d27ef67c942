"""Everything kept under the data dir: registry, catalogs, context tables, decision
logs, budget ledger."""
