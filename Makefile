# Two commands for a fresh machine: `make demo` (build + serve + a chat request on the embedded model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 is the CPU build that pip takes on these machines; an unpinned torch pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0
OPENAI_PORT ?= 9000

.PHONY: venv demo test clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: venv
	$(BIN)/tritonrepo build --model tiny-llama
	@set -e; \
	$(BIN)/tritonrepo serve build/tiny-llama --openai-port $(OPENAI_PORT) & pid=$$!; \
	trap 'kill -TERM $$pid 2>/dev/null; wait $$pid' EXIT; \
	for i in $$(seq 1 300); do curl -sf http://127.0.0.1:$(OPENAI_PORT)/health >/dev/null && break; \
	  kill -0 $$pid 2>/dev/null || exit 1; sleep 1; done; \
	$(BIN)/python -c 'import openai, sys; c = openai.OpenAI(base_url="http://127.0.0.1:$(OPENAI_PORT)/v1", api_key="none"); \
	r = c.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "Hello!"}], max_tokens=64); \
	print("\nchat completion:", repr(r.choices[0].message.content), "| usage:", r.usage.model_dump())'; \
	$(BIN)/tritonrepo smoke --openai-url http://127.0.0.1:$(OPENAI_PORT)/v1

test: venv
	$(BIN)/python -m pytest -ra

clean:
	rm -rf $(VENV) build/*/ build/*.log
