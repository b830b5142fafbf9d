"""Stage processors: ``Inbound -> StageResult`` handlers; the stream runner publishes the records."""
