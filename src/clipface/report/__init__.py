"""Reports: Markdown, figures and HTML rendered from saved ``results.json`` documents."""
