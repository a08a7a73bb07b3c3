"""Pure loss terms: one concern per module, per-example outputs, keyword-only options."""
