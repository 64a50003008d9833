PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean helpers wheel-check fuzz lint typecheck

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,ios,facility]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/phonewipe demo --out demo-output

lint: $(STAMP)
	$(BIN)/ruff check .

# mypy reads modules from the file system, and the phonewipe.* namespace is a package-dir
# mapping (pyproject.toml): it checks a tree of links laid out as the installed package.
typecheck: $(STAMP)
	rm -rf build/typecheck && mkdir -p build/typecheck/phonewipe
	ln -s $(CURDIR)/phonewipe/*.py build/typecheck/phonewipe/
	ln -s $(CURDIR)/phonewipe/serve build/typecheck/phonewipe/serve  # the dashboard, a sub-package
	for d in erase protocols certificates fixtures; do ln -s $(CURDIR)/$$d build/typecheck/phonewipe/$$d; done
	cd build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p phonewipe

# lint and typecheck first (#20 item 6: CI enforces them), then pytest, whose summary ends the
# output (CI reads it). Four workers on two cores: most tests wait on emulated phones and adb.
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q -n 4

# every wire parser's property tests with 10,000 examples each; the statistics say how many ran
FUZZ_TESTS := tests/test_adb_parsers.py tests/test_adb_wire.py tests/test_fastboot_parsers.py \
	tests/test_adb_emulator.py::test_the_fast_lexer_reads_plain_lines_as_the_general_one_does \
	tests/test_n900.py::test_stderr_parser_never_raises tests/test_n900.py::test_partitions_parser_never_raises \
	tests/test_n900.py::test_imei_parser_finds_only_digits \
	tests/test_attest.py::test_the_catalogue_parser_never_fails_otherwise \
	tests/test_attest.py::test_the_photo_checker_never_fails_otherwise \
	tests/test_edl_parsers.py tests/test_ios_wire.py
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:xdist -m "not interop" \
		--hypothesis-show-statistics $(FUZZ_TESTS) | grep -E "passing,|^tests/|passed|failed"

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

# A wheel built from the repository, installed into a fresh virtualenv, runs the product
# (the handset profiles ship as package data): `phonewipe emulate --list` and `phonewipe demo`.
wheel-check: $(STAMP)
	rm -rf build/wheel-check && mkdir -p build/wheel-check
	$(BIN)/python -m pip wheel --quiet --no-deps -w build/wheel-check .
	$(PYTHON) -m venv build/wheel-check/venv
	build/wheel-check/venv/bin/python -m pip install --quiet build/wheel-check/phonewipe-*.whl
	cd build/wheel-check && venv/bin/phonewipe emulate --list >/dev/null
	cd build/wheel-check && venv/bin/phonewipe demo --out demo >/dev/null
	@echo "wheel-check: the installed wheel lists its handset profiles and runs the demo"
