"""The shard stage: one tar shard in; its samples out (image and caption files, a parquet part, reject lines),
staged and committed atomically.

Reading order: `convert` (one shard end to end) -> `samples` (members paired by key) -> `rows` (a JSON
member to what its row needs; reject reasons) -> `writer` (a finished sample to files and a row) -> `sinks`
(the parquet part, the file tree) -> `commit` (what a shard leaves in OUT, and taking it back). The tar
reader: `tarcompress.open_tar` -> `tarstream.TarReader` (over `tarbytes.TarBytes`; the header format is
`tarheader`'s). `imageheader` reads an image's size from its first bytes.
"""
