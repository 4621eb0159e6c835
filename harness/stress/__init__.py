"""`kpool stress`: workloads run by worker processes of the C op driver, watched, merged and judged."""
