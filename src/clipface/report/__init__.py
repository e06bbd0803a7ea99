"""Stage 5, reports: Markdown, figures and HTML rendered from saved ``results.json`` documents."""
