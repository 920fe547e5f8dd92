/* sha256: the SHA-256 digest (FIPS 180-4) of a buffer, as lowercase hex.
 *
 * For naming a policy's text in ping and stats the way `sha256sum` names
 * the file, so that an operator can tell which version runs. Not on any
 * message path. */
#ifndef SMARTSHOP_SHA256_H
#define SMARTSHOP_SHA256_H

#include <stddef.h>

#define SHA256_HEX_LEN 64

/* Writes the 64 hex digits and a NUL into `out`. */
void sha256_hex(const void *data, size_t len, char out[SHA256_HEX_LEN + 1]);

#endif
