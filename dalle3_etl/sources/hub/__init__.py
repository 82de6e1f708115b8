"""Shards from the Hugging Face Hub: stream them into a conversion (``hf://`` inputs) or download them, verified.

Two ways in, both through the real ``huggingface_hub`` client (its HTTP session, retries, auth and endpoint):

* `resolve.resolve_hub_inputs` turns ``hf://datasets/<owner>/<name>[@<rev>]/<path or glob>`` into
  `stream.HubShardSource`s, pinned to the commit the revision pointed at when resolved (``HfApi.repo_info`` then
  ``HfApi.list_repo_tree`` / ``HfApi.get_paths_info``; sizes and sha256 come from the LFS metadata of the listing).
  ``source.open()`` returns a `stream.HubStream`: a non-seekable binary stream of the file read sequentially over
  HTTP (``/resolve/<commit>/<path>`` through ``huggingface_hub.utils.http_stream_backoff``), which resumes with a
  ``Range`` request when the connection drops (`transfer`), computes the sha256 while streaming, and raises
  `errors.HubIntegrityError` naming the file when the bytes read do not match the Hub's LFS metadata. With a keep
  dir (``--keep-tars DIR``, passed down from the CLI as ``keep_dir``) the bytes are also written to a new
  ``DIR/<name>.<random>.part``, moved to ``DIR/<name>`` only after a complete, verified read and never over
  anything (`keep`); a later open of the same file reads that copy instead of the network (still checking its
  sha256; one that does not match fails and is left as it is).

* `download.download` fetches ``data/data-NNNNNN.tar`` shards into a folder with ``hf_hub_download(...,
  local_dir=...)`` (the client's own resume-on-dropped-connection, local-dir metadata, Xet when available), then
  checks each file's size and sha256 against the LFS metadata in a hashing thread pool while the other files are
  still downloading (`progress` shows both). A file that does not match is reported; one this run downloaded is
  renamed ``<name>.corrupt`` (never picked up as a shard, never over an existing one). A file already there is
  only checked, never replaced or moved; one that cannot be the shard (another size...) is refused up front. The
  ``download`` command itself lives in `dalle3_etl.cli`.

The endpoint is ``HF_ENDPOINT`` as set when the call is made (else ``huggingface_hub.constants.ENDPOINT``), passed
explicitly to every client call; the token is the client's usual one (``HF_TOKEN`` or ``hf auth login``) unless
given.

Modules, each importing only those before it: `errors`, `selection` (the dataset's repo and ``--shards``), `client`,
`transfer`, `keep`, `stream`, `resolve`, `progress`, `download`. `errors` and `selection` are light (the CLI imports
them to register ``download``); the others import ``huggingface_hub`` and ``httpx2`` (~0.1 s, ~15 MB), so they are
imported on first Hub use only, never when the CLI starts.
"""
