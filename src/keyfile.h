/* keyfile: the CURVE key files `smartshop-broker --keygen` writes, and
 * ZeroMQ's own certificates. Shared by the broker and smartshop-ctl.
 *
 * A key file is read in one of two ways, by its first line that is not a
 * comment ("# " starts one):
 *   - a key of 40 Z85 characters: that is the key (what --keygen wrote
 *     before 0.2, and still writes first, for readers that take that line);
 *   - anything else: a ZeroMQ certificate (ZPL, as zmq.auth.create_certificates
 *     and czmq's zcert write it), whose `public-key = "..."` or
 *     `secret-key = "..."` line holds the key.
 * --keygen writes both in one file: the key line, then a `curve` section
 * with the same key(s), so pyzmq's zmq.auth.load_certificate reads it too. */
#ifndef SMARTSHOP_KEYFILE_H
#define SMARTSHOP_KEYFILE_H

#include <stdbool.h>
#include <stddef.h>

#define KEYFILE_KEY_LEN 40

/* True if `text` is a CURVE key in Z85 text. */
bool keyfile_is_key(const char *text);

/* Cuts a comment off a line. '#' is a Z85 character, so a comment starts
 * only at a '#' that begins the line or follows white space, and is
 * followed by white space or the end of the line ("# like this"). */
void keyfile_strip_comment(char *line);

/* Reads the key in `path` into out: the secret key with `secret` (and then
 * refuses a file others can read, like ssh), else the public key. Returns
 * 0, or -1 with a one-line reason in `err`. */
int keyfile_read(const char *path, bool secret, char out[KEYFILE_KEY_LEN + 1], char *err,
                 size_t errlen);

/* Writes the text of a key file for `public_key` (and, for the secret
 * file, `secret_key`; NULL for the public one) into buf. Returns 0, or -1
 * if buf is too small. */
int keyfile_format(char *buf, size_t len, const char *public_key, const char *secret_key);

#endif
