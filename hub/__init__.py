"""storelink hub."""
