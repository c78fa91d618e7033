"""Pure numerical kernels shared by the estimators (no oracles, no estimators here)."""
