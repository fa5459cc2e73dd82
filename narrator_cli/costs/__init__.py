"""What narration costs: accounts, estimates, budgets and what the cache saved."""
