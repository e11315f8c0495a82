"""storelink edge."""
