# phoenix — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/phoenix
DEMO := build/demo
SECUREBOOT := build/secureboot
# Debian packages the tests and the lab need (installed by `make deps`).
DEBIAN_PKGS := qemu-system-x86 ipxe-qemu ovmf ipxe dnsmasq-base busybox-static cpio kmod iproute2 util-linux tftp-hpa xorriso redfishtool fdisk dosfstools mtools chromium

.PHONY: help build test unit lint bench lab run demo-image secureboot-loaders deps fuzz clean vagrant-validate

help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/phoenix (static, trimmed)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/phoenix

deps: ## install the Debian packages tests and lab need (root; only what is missing)
	@missing=$$(for p in $(DEBIAN_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

demo-image: ## build the demo image (Debian kernel + our initramfs) into build/demo, and a v2 into build/demo2
	bash assets/demo/build.sh $(DEMO)
	bash assets/demo/build.sh $(DEMO)2 2

secureboot-loaders: ## fetch Debian's signed shim and GRUB (never installed) into build/secureboot
	bash assets/secureboot/fetch.sh $(SECUREBOOT)

test: demo-image secureboot-loaders ## unit tests and the QEMU end-to-end boots (as root; they say why they skip otherwise)
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 10m $$($(GO) list ./... | grep -v '/fleet/lab$$')
	@echo "== end-to-end: QEMU VMs netboot from phoenix (boot times below)"
	$(GO) test -count=1 -timeout 10m -v ./fleet/lab/

unit: ## unit tests only (no root, no VMs)
	$(GO) test -count=1 -short ./...

lint: ## gofmt, go vet, staticcheck (pinned by go.mod's tool directive)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# Peers the benchmarks measure phoenix against, in the same run.
BENCH_PKGS := dnsmasq-base kea-admin kea-dhcp4-server tftpd-hpa tftp-hpa nginx-light qemu-system-x86 ipxe

bench: build demo-image ## phoenix vs dnsmasq, Kea, tftpd-hpa, nginx side by side (root; installs them; ~13 min, QUICK=1 ~3 min)
	@missing=$$(for p in $(BENCH_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
		for s in nginx tftpd-hpa kea-dhcp4-server; do systemctl disable --now $$s 2>/dev/null || true; done; \
	fi
	./$(BIN) lab bench $(if $(QUICK),--quick) --kernel $(DEMO)/vmlinuz --initrd $(DEMO)/initrd.img
	PHOENIX_PERF=1 $(GO) test -count=1 -run 'TestPerf|TestRolloutOverhead' -v ./images ./fleet
	$(GO) test -run='^$$' -bench='PlanApply|Import' -benchtime=3x ./fleet ./images

fuzz: ## run every fuzz target for FUZZTIME (default 30s) each
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$${FUZZTIME:-30s} $$pkg || exit 1; \
		done; \
	done

lab: deps build demo-image secureboot-loaders ## the QEMU lab: phoenix, a virtual BMC and four VMs (BIOS, UEFI PXE, UEFI HTTP boot, UEFI Secure Boot) that netboot from it (root; Ctrl-C ends it)
	./$(BIN) lab --kernel $(DEMO)/vmlinuz --initrd $(DEMO)/initrd.img

run: build ## run phoenix serve with ARGS (e.g. make run ARGS='--state /srv/phoenix --interface eth1 ...')
	./$(BIN) serve $(ARGS)

vagrant-validate: ## check the Vagrantfile with Debian's vagrant + vagrant-libvirt (root; installs them if missing)
	@command -v vagrant >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends vagrant vagrant-libvirt)
	VAGRANT_DEFAULT_PROVIDER=libvirt vagrant validate

clean: ## remove build outputs
	rm -rf bin build
