/* keyfile: reading the CURVE key files `smartshop-broker --keygen` writes
 * (one key of 40 Z85 characters; "# " starts a comment). Shared by the
 * broker and smartshop-ctl. */
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

/* Reads the key in `path` into out. With `secret`, refuses a file others
 * can read (like ssh). Returns 0, or -1 with a one-line reason in `err`. */
int keyfile_read(const char *path, bool secret, char out[KEYFILE_KEY_LEN + 1], char *err,
                 size_t errlen);

#endif
