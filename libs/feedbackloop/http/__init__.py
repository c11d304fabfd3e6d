"""HTTP pieces shared by ingest and query: problem details, API-key auth, body limits."""
