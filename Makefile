# The two commands of the README's quick start, and their set-up.
#   make run   - install what is missing, build, start the broker on its defaults
#   make test  - install what is missing, build, run every test (ctest),
#                then all of them again under ASan and UBSan
#   make deb   - the Debian packages (debian/), checked with lintian
# Everything a fresh Debian 12 lacks is installed here (as root, or through sudo).

BUILD      ?= build
BUILD_TYPE ?= RelWithDebInfo
ASAN_BUILD ?= build-asan
JOBS       ?= 2

# Debian 12 packages, in three lists, so that a host that only builds and
# runs the broker (make run, make build, install_broker.sh) gets no test
# toolchain (issue 17):
#   PKGS_BUILD  building and running: compiler, CMake, the libraries (libnats-dev:
#               --nats, several brokers on one bus); and python3-zmq for the
#               demo's Python peers (examples/python)
#   PKGS_TEST   what only the tests add: clang and libFuzzer (the fuzzers),
#               systemd (systemd-analyze lints the unit), bash-completion
#               (test_deb.sh runs the completion of smartshop-ctl),
#               nats-server (bench's fan-out row beside NATS, and the tests of
#               several brokers on one bus), python3-venv
#               and python3-setuptools (pip-installing the Python client), lua5.4
#               and lua-cjson (the Lua library's unit tests, tests/lua_lib),
#               chromium and python3-websocket (the dashboard's browser test,
#               tests/browser)
#   PKGS_DEB    make deb: dpkg-buildpackage, debhelper and lintian; the
#               package's own build dependencies come from debian/control
# make test installs all three (the test suite builds the package too).
PKGS_BUILD := cmake make gcc pkg-config libzmq3-dev liblua5.4-dev lua-cjson-dev \
        uuid-dev uthash-dev libsodium-dev libcjson-dev libsystemd-dev libmicrohttpd-dev libsqlite3-dev libnats-dev python3-zmq
PKGS_TEST  := clang-14 libfuzzer-14-dev libclang-rt-14-dev systemd bash-completion \
        nats-server python3-venv python3-setuptools lua5.4 lua-cjson chromium python3-websocket
PKGS_DEB   := dpkg-dev debhelper lintian

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps deps-test deps-deb build run test test-asan install deb clean

all: build

# $(call install_missing,PACKAGES): apt-get install those not installed yet
define install_missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call install_missing,$(PKGS_BUILD))

deps-test: deps deps-deb
	$(call install_missing,$(PKGS_TEST))

# debhelper and lintian, then whatever debian/control's Build-Depends
# names that is missing (apt-get build-dep on this source tree)
deps-deb:
	$(call install_missing,$(PKGS_DEB))
	@dpkg-checkbuilddeps >/dev/null 2>&1 || { \
	  echo "make: installing the build dependencies in debian/control"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get build-dep -y -qq --no-install-recommends ./; }

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

run: build
	./$(BUILD)/smartshop-broker

# Every test against the normal build, then again against a build with
# AddressSanitizer and UBSan (the fuzzers run once, in the first pass).
test: deps-test build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)
	$(MAKE) --no-print-directory test-asan

test-asan: deps-test
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSMARTSHOP_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j$(JOBS) -E '^(fuzz|bench)\.'

# The broker, smartshop-ctl and libsmartshop (header, pkg-config file,
# CMake package) under PREFIX (default /usr/local).
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# The Debian packages (debian/), built with dpkg-buildpackage in a copy of
# the source under DEB_DIR (dpkg-buildpackage writes its output beside the
# source tree), then checked with lintian (an error fails). The .deb files
# land in DEB_DIR; install them with
#   apt-get install ./build-deb/*.deb     (or: sudo ./install_broker.sh)
DEB_DIR ?= build-deb
deb: deps-deb
	rm -rf $(DEB_DIR)/src $(DEB_DIR)/*.deb $(DEB_DIR)/*.changes $(DEB_DIR)/*.buildinfo
	mkdir -p $(DEB_DIR)/src
	@# the source as git knows it (tracked and new files, not ignored build trees)
	if git rev-parse --show-toplevel >/dev/null 2>&1; then \
	  git ls-files -z -co --exclude-standard | tar -c --null -T - -f - | tar -x -C $(DEB_DIR)/src; \
	else \
	  tar -c --exclude='./build*' --exclude='./obj-*' --exclude='./Testing' -f - . | tar -x -C $(DEB_DIR)/src; \
	fi
	cd $(DEB_DIR)/src && dpkg-buildpackage -us -uc -b -j$(JOBS)
	lintian --fail-on error --info $(DEB_DIR)/*.changes
	@echo "make: packages in $(DEB_DIR)/:"; ls -1 $(DEB_DIR)/*.deb

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(DEB_DIR)
