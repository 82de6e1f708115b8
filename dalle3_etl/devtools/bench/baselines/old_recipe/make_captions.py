"""The old recipe, step 4 (as users of the DALLE-3 1M dataset run it today: download the
tars, `tar xf` every shard into one folder, then this script and its sibling, then a hand-written SimpleTuner
entry).

Glob the JSON files again and write `short_caption` to `data/<image_name stem>.txt`, again skipping
JSONs without `width`. The caption is written as is: a caption containing a newline becomes several
captions for SimpleTuner, and an image whose JSON lacks width gets no `.txt` (known defects kept on
purpose: this is the baseline `dalle3-etl bench` compares against).

usage: python make_captions.py DATA_DIR
"""

import glob
import json
import os
import sys


def main(data_dir: str = "data") -> int:
    written = 0
    for path in glob.glob(os.path.join(data_dir, "*.json")):
        with open(path) as f:
            meta = json.load(f)
        if "width" not in meta:
            continue
        stem = os.path.splitext(meta["image_name"])[0]
        with open(os.path.join(data_dir, stem + ".txt"), "w") as f:
            f.write(meta.get("short_caption") or "")
        written += 1
    print(f"{written} caption files in {data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
