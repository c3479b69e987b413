"""Testing in production: experiments (shadow, A/B, canary, interleaving, bandit), their assignment, statistics and records."""
