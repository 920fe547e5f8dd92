# The two commands of the README's quick start, and their set-up.
#   make run   - install what is missing, build, start the broker on its defaults
#   make test  - install what is missing, build, run every test (ctest),
#                then all of them again under ASan and UBSan
# Everything a fresh Debian 12 lacks is installed here (as root, or through sudo).

BUILD      ?= build
BUILD_TYPE ?= RelWithDebInfo
ASAN_BUILD ?= build-asan
JOBS       ?= 2

# Debian 12 packages the build, the broker and the tests need.
PKGS := cmake make gcc pkg-config libzmq3-dev liblua5.4-dev lua-cjson-dev \
        uuid-dev uthash-dev libcjson-dev libsystemd-dev python3-zmq systemd \
        clang-14 libfuzzer-14-dev libclang-rt-14-dev nats-server \
        lua5.4 lua-cjson

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build run test test-asan install clean

all: build

deps:
	@missing=""; for p in $(PKGS); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

run: build
	./$(BUILD)/smartshop-broker

# Every test against the normal build, then again against a build with
# AddressSanitizer and UBSan (the fuzzers run once, in the first pass).
test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)
	$(MAKE) --no-print-directory test-asan

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSMARTSHOP_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j$(JOBS) -E '^(fuzz|bench)\.'

# The broker, smartshop-ctl and libsmartshop (header, pkg-config file,
# CMake package) under PREFIX (default /usr/local).
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
