"""Stage processors: ``Inbound -> StageResult`` handlers; the runner publishes the records."""
