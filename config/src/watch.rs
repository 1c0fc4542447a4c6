//! Watching the config file for hot reload (placeholder; being written).
