"""storelink drivers."""
