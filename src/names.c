/* names: syntax and reserved names for service names. */
#include "names.h"

#include <string.h>

/* 2: may start a name (letter, digit); 1: may follow (also . _ : -). A
 * table: names are checked on every message. */
static const unsigned char name_chars[256] = {
    ['0' ... '9'] = 2, ['A' ... 'Z'] = 2, ['a' ... 'z'] = 2,
    ['.'] = 1, ['_'] = 1, [':'] = 1, ['-'] = 1,
};

bool name_is_valid(const char *s, size_t len)
{
    if (len == 0 || len > NAME_MAX_LEN || name_chars[(unsigned char)s[0]] != 2)
        return false;
    for (size_t i = 1; i < len; i++)
        if (!name_chars[(unsigned char)s[i]])
            return false;
    return true;
}

static bool has_prefix(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

bool name_is_reserved(const char *s, size_t len)
{
    if (len == 0 || (s[0] != 'b' && s[0] != 's'))
        return false;       /* the common case, decided by one byte */
    return name_equals(s, len, "broker") || name_equals(s, len, "broadcast") ||
           has_prefix(s, len, "broker.") || has_prefix(s, len, "smartshop.");
}
