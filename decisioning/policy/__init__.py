"""What to do for a customer: catalog, rules, features, scoring, contact policies,
budgets, exploration, the decision."""
