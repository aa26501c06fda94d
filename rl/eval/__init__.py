"""Evaluation: n samples and a greedy answer per problem of each eval set, and what papers report of them
(mean@n, unbiased pass@k, maj@k, greedy accuracy), overall and per data source."""
