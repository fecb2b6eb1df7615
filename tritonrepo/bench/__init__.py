"""`tritonrepo bench`: a concurrency sweep against a running OpenAI endpoint with aiperf, as JSON, a table and charts."""
