"""Report: tables (runs.csv, results.csv, report.md) and plots (PNG) from finished runs' metrics.json."""
