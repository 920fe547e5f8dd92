#!/usr/bin/env bash
# Rules the compiler cannot check, read off the source tree:
# - every uthash table is keyed (docs/security.md, "Shares and keyed
#   hashes"): no file but keyed_hash.h includes <uthash.h> itself, since
#   a table built on the plain header would take colliding keys again.
set -u
cd "$(dirname "$0")/../.."
bad=$(grep -rln --include='*.c' --include='*.h' '#include <uthash.h>' src | grep -v '^src/keyed_hash.h$' || true)
if [ -n "$bad" ]; then
    echo "FAIL: these files include <uthash.h> directly; include \"keyed_hash.h\" instead:"
    echo "$bad"
    exit 1
fi
echo "ok: every uthash table goes through keyed_hash.h"
