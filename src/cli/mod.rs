//! The `berth` command (placeholder; being written).
