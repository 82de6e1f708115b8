"""The scripts the baseline modes of `dalle3-etl bench` run as separate processes (`python <script>`), shipped
with the package: ``old_recipe/`` (the documented recipe, run after ``tar xf``) and ``wds_baseline.py`` (a
`webdataset` conversion script). They are never imported by dalle3_etl."""
