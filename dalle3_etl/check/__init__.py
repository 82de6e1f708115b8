"""Looking at a converted output: `verify` (will SimpleTuner start on it), `status`, `head` and `stats`."""
