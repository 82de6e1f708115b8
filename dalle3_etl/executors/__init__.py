"""Running shard conversions: the contract (`base`), in this machine (`local`, `pool`), on Ray (`ray`), and picking one (`choose`)."""
