"""The end-to-end demonstration behind ``make demo`` and the synthetic disk images the benchmark shares."""
