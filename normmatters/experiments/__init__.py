"""Experiments of the paper: which runs, in which order, and the report built from them."""
