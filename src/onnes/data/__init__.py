"""Data stage: fetch raw files (upstream or mirror), curate them, split them."""
