"""What a run keeps in OUT: `layout` (every path), `records` (completion records), `manifest`, `locks`, `crash`
(flushing to disk, the crash-test hook) and `fsio` (the one module that deletes, moves or overwrites)."""
