"""The transfer log: written before a byte leaves, tamper-evident, verifiable offline."""
