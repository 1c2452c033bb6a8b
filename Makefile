# The two commands of the README, and shortcuts for the local brokers.
# Each target installs what it needs first (deploy/bootstrap.sh).
.PHONY: demo test bootstrap infra-up infra-down infra-status

demo:
	deploy/demo.sh $(ARGS)

test:
	deploy/test.sh $(ARGS)

bootstrap:
	deploy/bootstrap.sh

infra-up: bootstrap
	.venv/bin/supernet infra up

infra-down:
	.venv/bin/supernet infra down

infra-status:
	.venv/bin/supernet infra status
