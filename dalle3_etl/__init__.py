"""dalle3-etl: tar shards of image-caption samples -> SimpleTuner-ready parquet, caption files and images."""

__version__ = "0.1.0"
