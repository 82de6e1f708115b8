"""Where shards come from: command-line inputs turned into `base.ShardSource`s.

`base` (what every source shares: the type, shard ids and their checks, `SourceError`), `local` (files, folders,
globs), `hub` (``hf://`` inputs and ``download``, a package), `resolve` (`resolve.resolve_inputs`, the one entry:
local and Hub arguments, each shard once, clashing ids refused). Imports go base <- local, hub <- resolve.
"""
