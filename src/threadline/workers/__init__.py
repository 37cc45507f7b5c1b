"""Background work: claiming and driving runs, renewing leases, expiring overdue runs."""
