# The few commands a person types. `make serve` and `make test` install what they need first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PAIR ?= en-de
PORT ?= 8000
DATA_DIR ?=
DATA_FLAG := $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

.PHONY: install lock serve test lint format train-sentiment export-sentiment train-translation train-translation-multi30k \
        train-baseline \
        export-translation bench clean

# Stamps: serving needs only the runtime dependencies; load testing adds httpx (the loadgen
# extra); tests and training add the other extras (torch).
RUNTIME := $(VENV)/.runtime-installed
LOADGEN := $(VENV)/.loadgen-installed
FULL := $(VENV)/.full-installed
# Pinned runtime dependencies, made by `make lock` from pyproject.toml (deploy/requirements/README.md).
# The venv installs under them as constraints, so the suite runs the versions the images ship.
LOCK_DIR := deploy/requirements
LOCK := $(LOCK_DIR)/onnxruntime-gpu.txt

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null

$(RUNTIME): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install -c $(LOCK) -e .
	touch $@

$(LOADGEN): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install -c $(LOCK) -e '.[loadgen]'
	touch $@ $(RUNTIME)

$(FULL): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install -c $(LOCK) -e '.[train,dev]'
	touch $@ $(RUNTIME) $(LOADGEN)

install: $(FULL)  ## create .venv and install the project with its extras (train, dev)

# uv's resolver writes the locks; pinned because tests/test_deploy.py reads the format it writes.
UV_VERSION := 0.13.8
LOCK_FLAGS ?=  # --upgrade: move every pin to the newest release pyproject allows (default: keep pins that still fit)
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --quiet \
	--custom-compile-command 'make lock' $(LOCK_FLAGS)

lock: | $(BIN)/python  ## re-pin the runtime dependencies (deploy/requirements/*.txt) from pyproject.toml
	$(BIN)/pip install -q uv==$(UV_VERSION)
	$(UV_COMPILE) -o $(LOCK_DIR)/onnxruntime-gpu.txt
	{ echo '# Made by make lock: the CPU build of onnxruntime everywhere, the release onnxruntime-gpu.txt pins.'; \
	  sed -n 's/^onnxruntime-gpu==\([^ ;]*\).*/onnxruntime==\1/p' $(LOCK_DIR)/onnxruntime-gpu.txt; \
	  echo "onnxruntime-gpu ; sys_platform == 'never'"; } > $(LOCK_DIR)/cpu-overrides.txt
	$(UV_COMPILE) --override $(LOCK_DIR)/cpu-overrides.txt --no-emit-package onnxruntime-gpu \
	  -o $(LOCK_DIR)/onnxruntime.txt

serve: $(RUNTIME)  ## serve the shipped models on port $(PORT)
	$(BIN)/python -m service --port $(PORT)

test: $(FULL)  ## the whole suite (unit + integration, real server over HTTP)
	$(BIN)/python -m pytest -q

lint: $(FULL)
	$(BIN)/ruff check service training loadgen tests bench
	$(BIN)/ruff format --check service training loadgen tests bench

format: $(FULL)
	$(BIN)/ruff format service training loadgen tests bench
	$(BIN)/ruff check --fix service training loadgen tests bench

# Word vectors on the corpus's training text, then the classifier (resumes), then the verified export.
# REFERENCE=models-dir/sentiment puts a previous model beside the new one in the card.
REFERENCE ?=
train-sentiment: $(FULL)  ## train the sentiment model from scratch (IMDB + short texts) and export it to models/sentiment
	test -f runs/sentiment/vectors.pt || $(BIN)/python -m training.sentiment.vectors --out runs/sentiment/vectors.pt $(DATA_FLAG)
	$(BIN)/python -m training.sentiment.train --out runs/sentiment --vectors runs/sentiment/vectors.pt $(DATA_FLAG)
	$(BIN)/python -m training.export sentiment --run runs/sentiment --out models/sentiment --quantize \
	  $(if $(REFERENCE),--reference $(REFERENCE),) $(DATA_FLAG)

# Translation (issue 21): one attention seq2seq per PAIR on the general-domain union (Tatoeba minus a
# held-out slice, WMT news, Multi30k train three times), a joint SentencePiece vocabulary with byte
# fallback and split digits (8k; en-de 10k: at 8k and 9k it cuts everyday words such as "invoice" into
# pieces the 8k model dropped, docs/history.md), token-budget batches, a cosine schedule over EPOCHS.
# One torch thread (THREADS=2 on an idle machine); last.pt is saved every epoch and every 10 minutes within one, and
# a rerun of the same command resumes it (keep EPOCHS the same: the schedule is laid out over it).
# One pair at a time on the whole machine: two data-parallel processes of one torch thread each
# (each step one batch per process), matrix products in bfloat16 where the CPU has AMX or
# AVX512_BF16 (`--amp auto`: 1.4x the tokens/s of fp32 on an AMX CPU; fp32 elsewhere, where
# bfloat16 would be emulated and slower; AMP=bf16 or AMP=off forces a mode).
# Six epochs took 87 minutes (5,206 s) for en-de on 2026-12-05 and 81 minutes (4,885 s) for en-fr on
# 2026-12-06 (Intel Xeon with AMX, 2 cores), inside the issue's 100 minutes per pair; set beforehand
# for time, not tuned on validation (docs/history.md). On an AVX2-only CPU (AMD EPYC, 2 cores, fp32)
# an epoch takes 30-40 minutes: the shipped en-de (10k vocabulary) took 13,756 s (3.8 hours), over the
# 100 minutes there. The second stage (STAGE2_RECIPE, below) adds one epoch with fewer captions:
# 1,050 s alone for en-fr on the AMD EPYC, about 29 minutes for en-de (the same stage without the
# deadline source alone); not timed on an AMX CPU, where en-de's 87 minutes leave it 13 before the
# issue's 100, and the export (335 s alone here, 524 s before its decodes used both cores) comes after it.
# In the background: nohup make train-translation PAIR=en-de > runs/translate-en-de.log 2>&1 &
# Each epoch's weights are kept (runs/translate-PAIR/epoch<N>.pt): `python -m training.export translation
# --run runs/translate-PAIR --out DIR --quantize --average 2` exports the mean of the last two.
EPOCHS ?= 6
THREADS ?= 1
WORKERS ?= 2
AMP ?= auto
VOCAB_en-de := 10000
VOCAB ?= $(or $(VOCAB_$(PAIR)),8000)
TRANSLATION_RECIPE = --corpus general --epochs $(EPOCHS) --threads $(THREADS) --workers $(WORKERS) \
  --src-vocab $(VOCAB) --tgt-vocab $(VOCAB) --byte-fallback --split-digits --character-coverage 0.9999 \
  --weights tatoeba=1,news=1,multi30k=3 --token-budget 4000 --batch-size 256 --max-train-len 80 \
  --lr 2e-3 --schedule cosine --warmup-steps 300 --min-lr-frac 0.05 --dropout 0.2 \
  --val-max 1000 --checkpoint-minutes 10 --patience 3 --copy-through --amp $(AMP)
# glibc returns PyTorch's large per-batch buffers to the kernel and maps them again every batch;
# keeping them cut system time and gave 13% more tokens/s here.
TRAIN_ENV = MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296

# The second stage: one epoch from the first's best weights with captions at weight 1 and the
# Tatoeba pairs with a deadline "by" ("by Friday": "bis Freitag", "d'ici vendredi") repeated K
# times, less a held-out third (training.translation.deadline_probe counts it); learning rate
# 5e-4 warmed up over 50 steps and decayed to 0. K is 20 for en-de and 50 for en-fr, chosen on
# validation and the held-out third (docs/history.md).
DEADLINE_K_en-fr := 50
DEADLINE_K ?= $(or $(DEADLINE_K_$(PAIR)),20)
MIXTURE_CHOICE_en-fr := deadline=$(DEADLINE_K_en-fr) chosen over 20 on greedy validation and the deadline probe's held-out third, the other weights set beforehand
STAGE2_RECIPE = --corpus general --epochs 1 --threads $(THREADS) --workers $(WORKERS) \
  --src-vocab $(VOCAB) --tgt-vocab $(VOCAB) --byte-fallback --split-digits --character-coverage 0.9999 \
  --weights tatoeba=1,news=1,multi30k=1,deadline=$(DEADLINE_K) --token-budget 4000 --batch-size 256 --max-train-len 80 \
  --lr 5e-4 --schedule cosine --warmup-steps 50 --min-lr-frac 0 --dropout 0.2 \
  --val-max 1000 --checkpoint-minutes 10 --patience 3 --copy-through --amp $(AMP)

# Each stage runs through training.timed, which adds its minutes and this CPU to
# runs/timing-PAIR.json; the last line reports the stages against the issue's 100 minutes.
TIMED = $(BIN)/python -m training.timed --record runs/timing-$(PAIR).json --stage
train-translation: $(FULL)  ## train PAIR=en-de|en-fr on the general-domain recipe, both stages (resumes), and export to models/translate-PAIR
	$(TRAIN_ENV) $(TIMED) "first stage" -- $(BIN)/python -m training.translation.train --pair $(PAIR) \
	  --out runs/translate-$(PAIR) $(TRANSLATION_RECIPE) $(DATA_FLAG)
	$(TRAIN_ENV) $(TIMED) "second stage" -- $(BIN)/python -m training.translation.train --pair $(PAIR) \
	  --out runs/stage2-$(PAIR) --init runs/translate-$(PAIR)/best.pt $(STAGE2_RECIPE) $(DATA_FLAG)
	$(TIMED) export -- $(BIN)/python -m training.export translation --run runs/stage2-$(PAIR) \
	  --out models/translate-$(PAIR) --quantize $(DATA_FLAG) \
	  $(if $(wildcard runs/baseline-$(PAIR)/best.pt),--baseline-run runs/baseline-$(PAIR)) \
	  $(if $(MIXTURE_CHOICE_$(PAIR)),--mixture-choice "$(MIXTURE_CHOICE_$(PAIR))")
	$(BIN)/python -m training.timed --report runs/timing-$(PAIR).json --budget-minutes 100

# The caption-only recipe of the translators shipped before issue 21 (Multi30k alone, plateau
# schedule; best validation BLEU at epoch 13 and 11 of 15 and 11), kept to reproduce them.
EPOCHS_M30K_en-de := 15
EPOCHS_M30K_en-fr := 11
train-translation-multi30k: $(FULL)  ## the shipped caption-only PAIR (hours; resumes) into runs/multi30k-PAIR, not exported
	$(BIN)/python -m training.translation.train --pair $(PAIR) --out runs/multi30k-$(PAIR) \
	  --epochs $(or $(EPOCHS_M30K_$(PAIR)),25) --threads 0 $(DATA_FLAG)

train-baseline: $(FULL)  ## the same recipe without attention (report only, not shipped)
	$(TRAIN_ENV) $(BIN)/python -m training.translation.train --pair $(PAIR) --no-attention --out runs/baseline-$(PAIR) \
	  $(TRANSLATION_RECIPE) $(DATA_FLAG)

# Containers and load testing (README: Deploy, Load testing). Docker builds use the host network.
IMAGE ?= rnn-serve:latest
BASE_IMAGE ?=
MODELS ?= models
SMOKE_PORT ?= 18080
CUDA_BASE_IMAGE ?= nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
URL ?= http://127.0.0.1:$(PORT)
ENDPOINT ?= sentiment
LOAD ?= --concurrency 8
DURATION ?= 30
LOADTEST_OUT ?= runs/loadtest/$(ENDPOINT).json
LOADTEST_FLAGS ?=

.PHONY: image image-gpu smoke loadtest

image:  ## build the CPU image $(IMAGE) (BASE_IMAGE=... for another Debian base)
	docker build --network host -f deploy/Dockerfile -t $(IMAGE) $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE),) .

image-gpu:  ## build the CUDA image rnn-serve:gpu (onnxruntime-gpu, --device cuda)
	docker build --network host -f deploy/Dockerfile -t rnn-serve:gpu --build-arg BASE_IMAGE=$(CUDA_BASE_IMAGE) \
	  --build-arg ONNXRUNTIME=onnxruntime-gpu --build-arg DEVICE=cuda .

smoke:  ## build, run and probe the image (BASE_IMAGE=..., MODELS=dir of artifacts, SMOKE_PORT=18080)
	BASE_IMAGE=$(BASE_IMAGE) MODELS=$(MODELS) PORT=$(SMOKE_PORT) deploy/smoke.sh

# arm64 from the same Dockerfile, on an arm64 base that deploy/base-image.sh makes with debootstrap;
# on an x86-64 machine every arm64 step runs under qemu-user 10+ through binfmt_misc (set up by
# deploy/qemu-binfmt.sh), so these take minutes and are not in make test (docs/deploy.md, arm64:
# the last run's figures). QEMU_CPU is the CPU qemu emulates for verify- and smoke-: Neoverse N1
# (Graviton2, Ampere Altra), a real CPU, by default; `max` is qemu's every-feature one (SVE2, SME). ARCH_IMAGE_arm64
# and ARCH_BASE_arm64 name the images; the same targets work for amd64 (image-amd64, smoke-amd64),
# natively here (QEMU_CPU unused).
ARCH_BASE_amd64 ?= local/python:3.11-bookworm-amd64
ARCH_BASE_arm64 ?= local/python:3.11-bookworm-arm64
ARCH_IMAGE_amd64 ?= rnn-serve:amd64
ARCH_IMAGE_arm64 ?= rnn-serve:arm64
QEMU_CPU ?= $(if $(filter arm64,$(arch)),neoverse-n1,)

.PHONY: base-image-amd64 base-image-arm64 image-amd64 image-arm64 verify-amd64 verify-arm64 smoke-amd64 smoke-arm64 \
        images image-multiarch

# One rule per step for both architectures, the architecture read from the target's name; each
# target also on a line of its own (its prerequisite), so its name is there to find.
arch = $(lastword $(subst -, ,$@))

base-image-amd64 base-image-arm64:  ## Debian bookworm + Python base for one architecture (deploy/base-image.sh)
	deploy/base-image.sh $(arch) $(ARCH_BASE_$(arch))

image-amd64: base-image-amd64
image-arm64: base-image-arm64  ## the CPU image for linux/arm64 (rnn-serve:arm64), or amd64
image-amd64 image-arm64:
	docker build --network host --platform linux/$(arch) -f deploy/Dockerfile -t $(ARCH_IMAGE_$(arch)) \
	  --build-arg BASE_IMAGE=$(ARCH_BASE_$(arch)) .

verify-amd64: image-amd64
verify-arm64: image-arm64  ## python -m service.verify inside that image (emulating QEMU_CPU on another CPU)
verify-amd64 verify-arm64:
	docker run --rm --platform linux/$(arch) --network none $(if $(QEMU_CPU),-e QEMU_CPU=$(QEMU_CPU),) --entrypoint python \
	  $(ARCH_IMAGE_$(arch)) -m service.verify

smoke-amd64: base-image-amd64
smoke-arm64: base-image-arm64  ## build, verify, run and probe that image (deploy/smoke.sh; emulated: SLOW=10)
smoke-amd64 smoke-arm64:
	PLATFORM=linux/$(arch) BASE_IMAGE=$(ARCH_BASE_$(arch)) IMAGE=$(ARCH_IMAGE_$(arch)) QEMU_CPU=$(QEMU_CPU) \
	  MODELS=$(MODELS) PORT=$(SMOKE_PORT) deploy/smoke.sh

images: image-amd64 image-arm64  ## both architectures' images (rnn-serve:amd64, rnn-serve:arm64)

# One tag for both (a manifest list), in a registry: MULTIARCH_REF=registry/rnn-serve:tag (INSECURE=1 over HTTP).
MULTIARCH_REF ?=
image-multiarch: images  ## push both images and a manifest list naming them as $(MULTIARCH_REF) (deploy/multiarch.sh)
	@test -n "$(MULTIARCH_REF)" || { echo "usage: make image-multiarch MULTIARCH_REF=registry/rnn-serve:tag" >&2; exit 1; }
	IMAGES="$(ARCH_IMAGE_amd64) $(ARCH_IMAGE_arm64)" deploy/multiarch.sh $(MULTIARCH_REF)

loadtest: $(LOADGEN)  ## load-test a running server: ENDPOINT=sentiment|translate LOAD="--sweep 1,4,16" URL=...
	$(BIN)/python -m loadgen --url $(URL) --endpoint $(ENDPOINT) $(LOAD) --duration $(DURATION) \
	  --out $(LOADTEST_OUT) $(DATA_FLAG) $(LOADTEST_FLAGS)

BENCH_FLAGS ?=

bench: $(FULL)  ## serving benchmark: batching vs --max-batch-size 1, served vs raw ONNX, /v1 vs OIP over HTTP and gRPC (BENCH_FLAGS="--quick", "--models-dir DIR")
	$(BIN)/python -m bench.serving $(DATA_FLAG) $(BENCH_FLAGS)

# Triton's perf_analyzer against the service (OIP over HTTP and gRPC); installs it under /tmp first (docs/oip.md).
perf-analyzer: $(FULL)  ## perf_analyzer over HTTP and gRPC on the shipped models (PA_FLAGS="--concurrency 32")
	test -x /tmp/perf_analyzer || sh ../shared/tools/perf-analyzer.sh
	$(BIN)/python -m bench.perf_analyzer $(DATA_FLAG) $(PA_FLAGS)

# Reliability (README: Reliability). The test suite fuzzes 150 examples per endpoint and mode; this, thousands.
FUZZ_EXAMPLES ?= 2500
SOAK_FLAGS ?=

.PHONY: fuzz soak perf-analyzer

fuzz: $(FULL)  ## schemathesis against a real server's /openapi.json: FUZZ_EXAMPLES per endpoint and mode, and boundary values
	RNNSERVE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s -p no:cacheprovider --timeout 3600 tests/test_reliability_fuzz.py

soak: $(FULL)  ## 10 minutes at 70% of measured capacity on the shipped models (SOAK_FLAGS="--duration 60", "--models-dir DIR")
	$(BIN)/python -m bench.soak $(DATA_FLAG) $(SOAK_FLAGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
