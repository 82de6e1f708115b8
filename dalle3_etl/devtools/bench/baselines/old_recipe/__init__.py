"""The old recipe users run today after ``tar xf`` of every shard: ``make_parquet.py`` then
``make_captions.py`` (single process; run as scripts by `dalle3-etl bench`, never imported)."""
