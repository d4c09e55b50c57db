"""Neural building blocks. Encoders are registered by name in :data:`ENCODERS`."""
