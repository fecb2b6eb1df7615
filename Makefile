# Two commands for a fresh machine: `make demo` (build + serve + a chat request on an embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 is the CPU build that pip takes on these machines; an unpinned torch pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0
OPENAI_PORT ?= 9000
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
# scripted-llama: its greedy answer is fixed by construction, so the demo shows a reply one can recognise.
DEMO_MODEL := scripted-llama

# A second environment as users get it, `pip install ".[all]"` without the test extra (which once hid an undeclared
# httpx from smoke): .ci/check_imports.py checks every import there and runs the CLI. Remade when pyproject.toml changes.
INSTALL_CHECK ?= .venv-install-check

.PHONY: venv demo test check-install clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml .ci/install_dynamo.sh .ci/install_bench.sh .ci/keep_installed.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	.ci/install_dynamo.sh $(BIN)/python  # tritonrepo[dynamo] without its unreachable aisimulate (see the script)
	.ci/install_bench.sh $(BIN)/python  # tritonrepo[bench]: aiperf without its huggingface-hub<2 pin (see the script)
	touch $@

demo: venv
	$(BIN)/tritonrepo build --model $(DEMO_MODEL)
	@set -e; \
	$(BIN)/tritonrepo serve build/$(DEMO_MODEL) --openai-port $(OPENAI_PORT) --http-port $(HTTP_PORT) \
	  --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT) & pid=$$!; \
	trap 'kill -TERM $$pid 2>/dev/null; wait $$pid' EXIT; \
	for i in $$(seq 1 300); do curl -sf http://127.0.0.1:$(OPENAI_PORT)/health >/dev/null && break; \
	  kill -0 $$pid 2>/dev/null || exit 1; sleep 1; done; \
	$(BIN)/python -c 'import openai; from tritonrepo.source.catalog import EMBEDDED; \
	what = {m.name: m.description for m in EMBEDDED}; \
	print("\nThe model: $(DEMO_MODEL),", what["$(DEMO_MODEL)"] + "."); \
	print("(tiny-llama, the other embedded model, has random weights: it answers gibberish by design.)"); \
	c = openai.OpenAI(base_url="http://127.0.0.1:$(OPENAI_PORT)/v1", api_key="none"); \
	r = c.chat.completions.create(model="$(DEMO_MODEL)", messages=[{"role": "user", "content": "Hello!"}], \
	    max_tokens=200, temperature=0); \
	m = r.choices[0].message; \
	print("chat completion (temperature 0):"); \
	print("  reasoning_content:", repr((m.model_extra or {}).get("reasoning_content"))); \
	print("  content:", repr(m.content)); \
	print("  finish_reason:", r.choices[0].finish_reason, "| usage:", r.usage.model_dump(), "\n")'; \
	$(BIN)/tritonrepo smoke --url 127.0.0.1:$(HTTP_PORT) --grpc-url 127.0.0.1:$(GRPC_PORT) \
	  --openai-url http://127.0.0.1:$(OPENAI_PORT)/v1

$(INSTALL_CHECK)/.installed: pyproject.toml .ci/install_dynamo.sh .ci/install_bench.sh .ci/keep_installed.sh
	rm -rf $(INSTALL_CHECK)
	$(PYTHON) -m venv $(INSTALL_CHECK)
	$(INSTALL_CHECK)/bin/python -m pip install --quiet --upgrade pip
	$(INSTALL_CHECK)/bin/python -m pip install --quiet "$(TORCH)"
	$(INSTALL_CHECK)/bin/python -m pip install --quiet ".[all]"
	.ci/install_dynamo.sh $(INSTALL_CHECK)/bin/python
	.ci/install_bench.sh $(INSTALL_CHECK)/bin/python
	touch $@

check-install: $(INSTALL_CHECK)/.installed
	$(INSTALL_CHECK)/bin/python -m pip install --quiet --no-deps --force-reinstall .  # this tree's code, not a stale copy
	cd / && env -u PYTHONPATH $(abspath $(INSTALL_CHECK))/bin/python $(CURDIR)/.ci/check_imports.py \
	  --root $(CURDIR) --cli $(abspath $(INSTALL_CHECK))/bin/tritonrepo

test: venv check-install
	$(BIN)/python -m pytest -ra

clean:
	rm -rf $(VENV) $(INSTALL_CHECK) build/*/ build/*.log
