# deploykit: everyday commands. The two that matter on a fresh machine:
#   make demo    set everything up and run the full job on the local sandbox
#   make test    run the unit and sandbox integration tests

PYTHON  := .venv/bin/python
PYINFRA := .venv/bin/pyinfra
INVENTORY ?= inventories/sandbox.py

.PHONY: setup sandbox sandbox-down bootstrap provision demo test unit integration \
        build push pull images

setup:
	bin/setup

## sandbox: create (or complete) the local fleet; SANDBOX_WEB=8 SANDBOX_LB=2 resize it
sandbox: setup
	$(PYTHON) -m sandbox up

## sandbox-down: remove every container, volume and network the sandbox created
sandbox-down:
	$(PYTHON) -m sandbox down

bootstrap: setup
	$(PYINFRA) -y $(INVENTORY) deploys/bootstrap.py --user root

provision: setup
	$(PYINFRA) -y $(INVENTORY) deploys/provision.py

## demo: sandbox, bootstrap, provision
demo: sandbox bootstrap provision

## test: every test, unit then sandbox integration (the sandbox is recreated)
test: setup
	$(PYTHON) -m pytest tests/

unit: setup
	$(PYTHON) -m pytest tests/unit

integration: setup
	$(PYTHON) -m pytest tests/integration

# The seed's image targets, with REGISTRY / PROJECT / TAG (see app/Makefile).
build push pull images:
	$(MAKE) -C app $@
