"""Evaluation of synthetic data: utility, fidelity, FID/KID and empirical privacy."""
