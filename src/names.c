/* names: syntax and reserved names for service names. */
#include "names.h"

#include <string.h>

static bool is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool name_is_valid(const char *s, size_t len)
{
    if (len == 0 || len > NAME_MAX_LEN || !is_alnum((unsigned char)s[0]))
        return false;
    for (size_t i = 1; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alnum(c) && c != '.' && c != '_' && c != ':' && c != '-')
            return false;
    }
    return true;
}

bool name_equals(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(s, word, len) == 0;
}

static bool has_prefix(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

bool name_is_reserved(const char *s, size_t len)
{
    return name_equals(s, len, "broker") || name_equals(s, len, "broadcast") ||
           has_prefix(s, len, "broker.") || has_prefix(s, len, "smartshop.");
}
