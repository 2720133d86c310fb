"""Everything edgepack renders for people and tools: the manifest (from the stages' records), the
bundle READMEs' shared parts, the console text, and the compare reports (JSON, Markdown, HTML)."""
