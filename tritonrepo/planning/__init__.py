"""The plan stage: what the user asked for (request.py) -> which path, runtime, parallelism and limits serve a model
(the pure planner: planner.py and the modules it imports) -> the build that follows it. The planner returns data;
preview.py (facts and hardware for `tritonrepo plan`), build.py, engines.py and stage_cache.py do the I/O."""
