"""The old recipe, step 3 (as users of the DALLE-3 1M dataset run it today: download the
tars, `tar xf` every shard into one folder, then this script and its sibling, then a hand-written SimpleTuner
entry).

After `tar xf` of every shard into one `data/` folder: glob `data/*.json`, load each with the standard
json module, skip any without `width`, build a pandas DataFrame with columns width, height,
caption (= short_caption) and filename (= image_name), save it as `dalle3.parquet` without the index.
Everything is held in memory; one process.

Kept deliberately naive: it is the baseline `dalle3-etl bench` compares against.
The one liberty taken: `.get("short_caption")` instead of `["short_caption"]`, so that a JSON without
that field gives an empty caption instead of stopping the script (synthetic corpora have such JSONs).

usage: python make_parquet.py DATA_DIR OUT.parquet
"""

import glob
import json
import os
import sys

import pandas as pd


def main(data_dir: str = "data", out: str = "dalle3.parquet") -> int:
    rows = []
    for path in glob.glob(os.path.join(data_dir, "*.json")):
        with open(path) as f:
            meta = json.load(f)
        if "width" not in meta:
            continue
        rows.append(
            {
                "width": meta["width"],
                "height": meta["height"],
                "caption": meta.get("short_caption"),
                "filename": meta["image_name"],
            }
        )
    df = pd.DataFrame(rows, columns=["width", "height", "caption", "filename"])
    df.to_parquet(out, index=False)
    print(f"{len(df)} rows -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
