"""What triggers queue for delivery: the outbox and timers, sealed open links."""
