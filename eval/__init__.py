"""The cross-modal evaluation suite (may import mm_gpg, data_prep and rewards)."""
