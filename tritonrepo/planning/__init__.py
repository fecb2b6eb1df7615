"""The plan stage: what the user asked for -> which runtime, parallelism and limits serve a model -> the build that
follows it. Pure planning returns data; build.py, engines.py and stage_cache.py do the I/O."""
