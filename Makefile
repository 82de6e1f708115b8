PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= out
SAMPLE ?= sample

.PHONY: venv run run-img2dataset run-extracted run-webshart test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Generate the bundled sample corpus, convert it, print where the SimpleTuner-ready output is.
run: venv
	$(PY) -m dalle3_etl synth $(SAMPLE) --shards 4 --per-shard 250 --seed 0
	$(PY) -m dalle3_etl convert $(SAMPLE) -o $(OUT) --config config/default.toml
	$(PY) -m dalle3_etl entry $(OUT) --also imagefolder
	@echo "Train on it:"
	@echo "  SimpleTuner: in its config.json set \"data_backend_config\": \"$(abspath $(OUT))/multidatabackend.json\""
	@echo "  diffusers:   accelerate launch examples/text_to_image/train_text_to_image.py \\"
	@echo "                 --pretrained_model_name_or_path MODEL --train_data_dir $(abspath $(OUT))/data \\"
	@echo "                 --caption_column text --resolution 512 --output_dir sd-dalle3"

# The same for img2dataset-style WebDataset shards (00000.tar: .webp + .json + .txt caption).
run-img2dataset: venv
	$(PY) -m dalle3_etl synth $(SAMPLE)-i2d --style img2dataset --shards 4 --per-shard 250 --seed 0
	$(PY) -m dalle3_etl convert $(SAMPLE)-i2d -o $(OUT)-i2d --caption-field txt
	$(PY) -m dalle3_etl entry $(OUT)-i2d --minimum-image-size 0.05 --resolution 0.25  # 256-px images
	$(PY) -m dalle3_etl verify $(OUT)-i2d

# An extracted folder (the old recipe's `tar xf` output): converted in place, images hard-linked into OUT.
run-extracted: venv
	$(PY) -m dalle3_etl synth $(SAMPLE)-extracted --extracted --shards 4 --per-shard 250 --seed 0
	$(PY) -m dalle3_etl convert $(SAMPLE)-extracted -o $(OUT)-extracted
	$(PY) -m dalle3_etl verify $(OUT)-extracted

# Train from the tars: webshart indexes and the SimpleTuner webshart entry, no image written.
run-webshart: venv
	$(PY) -m dalle3_etl synth $(SAMPLE)-tars --shards 4 --per-shard 250 --seed 0
	$(PY) -m dalle3_etl convert $(SAMPLE)-tars/*.tar -o $(OUT)-webshart --webshart
	$(PY) -m dalle3_etl verify $(OUT)-webshart

# The README's test command: the import layers (stages import only downward, no cycles), ruff, the suite.
test: venv
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check dalle3_etl tests benchmarks
	$(VENV)/bin/ruff format --check dalle3_etl tests benchmarks
	$(PY) -m pytest -q

bench: venv
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m dalle3_etl bench

clean:
	rm -rf $(OUT) $(SAMPLE) $(OUT)-i2d $(SAMPLE)-i2d $(OUT)-extracted $(SAMPLE)-extracted $(OUT)-webshart $(SAMPLE)-tars
