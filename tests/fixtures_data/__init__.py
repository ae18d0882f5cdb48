"""Writers of small fixture files in the official schema of each hub dataset the adapters read."""
