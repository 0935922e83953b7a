"""``googlenet bench infer|train|data``: the project's fast paths beside what users run today, in one process."""
