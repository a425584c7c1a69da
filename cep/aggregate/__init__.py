"""The aggregator: a sweep's experiment folder read (no Ray, no torch) and summarised into `summary/`."""
