# deploykit: everyday commands. The two that matter on a fresh machine:
#   make demo    set everything up and run the full job on the local sandbox
#   make test    run the unit and sandbox integration tests

PYTHON  := .venv/bin/python
PYINFRA := .venv/bin/pyinfra
INVENTORY ?= inventories/sandbox.py

.PHONY: setup sandbox sandbox-down bootstrap provision demo deploy rollback bench test unit \
        integration build push pull images

setup:
	bin/setup

## sandbox: create (or complete) the local fleet; SANDBOX_WEB=8 SANDBOX_LB=2 resize it,
## SANDBOX_RELEASE=bookworm (default trixie) or SANDBOX_RELEASES="web1=bookworm" pick Debian
sandbox: setup
	$(PYTHON) -m sandbox up

## sandbox-down: remove every container, volume and network the sandbox created
sandbox-down:
	$(PYTHON) -m sandbox down

## bootstrap: as root on fresh hosts; hosts already hardened refuse root, so it then
## runs again as deploy (which also rotates the deploy user's keys)
bootstrap: setup
	$(PYINFRA) -y $(INVENTORY) deploys/bootstrap.py --user root || { \
	  echo "bootstrap: some hosts refused root (already hardened); running as deploy"; \
	  $(PYINFRA) -y $(INVENTORY) deploys/bootstrap.py; }

provision: setup
	$(PYINFRA) -y $(INVENTORY) deploys/provision.py

## demo: sandbox, bootstrap, provision, images, then deploy v1 and roll to v2 under load
demo: sandbox bootstrap provision images
	$(PYTHON) -m bench.demo

## deploy: roll TAG to the web hosts, e.g. make deploy TAG=v2
deploy: setup
	$(PYINFRA) -y $(INVENTORY) deploys/web.py --data image_tag=$(TAG)

rollback: setup
	$(PYINFRA) -y $(INVENTORY) deploys/rollback.py

## bench: roll timings for 3 and 6 web hosts (recreates the sandbox at each size)
bench: setup images
	$(PYTHON) -m bench.roll_benchmark --web 3 6

## test: every test, unit then sandbox integration on Debian 13 hosts, then the
## `every_release` integration tests on Debian 12 hosts (the sandbox is recreated each time)
test: setup
	SANDBOX_RELEASE=trixie $(PYTHON) -m pytest --durations=25 tests/unit tests/integration
	SANDBOX_RELEASE=bookworm $(PYTHON) -m pytest --durations=25 -m every_release tests/integration

unit: setup
	$(PYTHON) -m pytest tests/unit

integration: setup
	$(PYTHON) -m pytest tests/integration

# The seed's image targets, with REGISTRY / PROJECT / TAG (see app/Makefile).
build push pull images: setup
	$(MAKE) -C app $@
