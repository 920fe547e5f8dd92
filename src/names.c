/* names: syntax and reserved names for service names. */
#include "names.h"

#include <string.h>

/* 2: may start a name (letter, digit); 1: may follow (also . _ : -). A
 * table: names are checked on every message. */
const unsigned char names__chars[256] = {
    ['0' ... '9'] = 2, ['A' ... 'Z'] = 2, ['a' ... 'z'] = 2,
    ['.'] = 1, ['_'] = 1, [':'] = 1, ['-'] = 1,
};

static bool has_prefix(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

bool names__is_reserved(const char *s, size_t len)
{
    return name_equals(s, len, "broker") || name_equals(s, len, "broadcast") ||
           has_prefix(s, len, "broker.") || has_prefix(s, len, "smartshop.");
}
