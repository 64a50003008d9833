PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean helpers

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/phonewipe demo --out demo-output

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache

# The on-device reader of an unrooted fill (protocols/adb/helper/pwread.c), static, one per
# Android ABI, built with Debian's compilers (gcc, gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf).
# The binaries are committed so a phone can be read without these compilers; a test checks
# they were built from the current source.
HELPER := protocols/adb/helper
helpers:
	aarch64-linux-gnu-gcc -Os -static -s -o $(HELPER)/bin/phonewipe-pwread-arm64-v8a $(HELPER)/pwread.c
	arm-linux-gnueabihf-gcc -Os -static -s -o $(HELPER)/bin/phonewipe-pwread-armeabi-v7a $(HELPER)/pwread.c
	gcc -Os -static -s -o $(HELPER)/bin/phonewipe-pwread-x86_64 $(HELPER)/pwread.c
	sha256sum $(HELPER)/pwread.c | cut -d' ' -f1 > $(HELPER)/bin/SOURCE.sha256
