"""The result model of a run and its writers: summary.json, junit.xml, an HdrHistogram log, SARIF, HTML."""
