"""Testing in production: shadow, A/B, canary, interleaving and bandit experiments; their assignment,
statistics and records."""
