"""The weight sync into the engines and the parity check that proves it."""
