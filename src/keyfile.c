/* keyfile: CURVE key files. See keyfile.h. */
#include "keyfile.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

bool keyfile_is_key(const char *text)
{
    static const char z85[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              ".-:+=^!/*?&<>()[]{}@%$#";
    if (strlen(text) != KEYFILE_KEY_LEN)
        return false;
    for (const char *c = text; *c; c++)
        if (!strchr(z85, *c))
            return false;
    return true;
}

void keyfile_strip_comment(char *line)
{
    for (char *c = line; *c; c++) {
        bool starts = c == line || c[-1] == ' ' || c[-1] == '\t';
        bool ends = c[1] == '\0' || c[1] == ' ' || c[1] == '\t' || c[1] == '\r' || c[1] == '\n';
        if (*c == '#' && starts && ends) {
            *c = '\0';
            return;
        }
    }
}

/* A ZPL line `public-key = "KEY"` (quotes ' or " or none): the key, if
 * `line` (comment cut, leading blanks skipped) is one for `name`. */
static const char *zpl_key(char *line, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(line, name, n) != 0)
        return NULL;
    char *v = line + n;
    v += strspn(v, " \t");
    if (*v != '=')
        return NULL;
    v++;
    v += strspn(v, " \t");
    char quote = (*v == '"' || *v == '\'') ? *v++ : '\0';
    char *end = quote ? strchr(v, quote) : v + strcspn(v, " \t");
    if (!end)
        return NULL;
    *end = '\0';
    return keyfile_is_key(v) ? v : NULL;
}

int keyfile_read(const char *path, bool secret, char out[KEYFILE_KEY_LEN + 1], char *err,
                 size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "key file %s: %s", path, strerror(errno));
        return -1;
    }
    if (secret && (st.st_mode & 077)) {
        snprintf(err, errlen, "key file %s: permissions %03o are too open: only its owner may "
                 "read a secret key (chmod 600 %s)", path, st.st_mode & 0777, path);
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "key file %s: %s", path, strerror(errno));
        return -1;
    }
    /* The certificate's line for the wanted key wins; else a bare key on
     * the first line that is not a comment (the format before 0.2). */
    char line[256], bare[KEYFILE_KEY_LEN + 1] = "", zpl[KEYFILE_KEY_LEN + 1] = "";
    bool first = true;
    while (fgets(line, sizeof line, f)) {
        size_t got = strlen(line);
        if (got == sizeof line - 1 && line[got - 1] != '\n') {
            int ch;                       /* longer than any key line: skip all of it */
            while ((ch = fgetc(f)) != EOF && ch != '\n')
                ;
            first = false;
            continue;
        }
        line[strcspn(line, "\r\n")] = '\0';
        keyfile_strip_comment(line);
        char *start = line + strspn(line, " \t");
        if (!*start)
            continue;
        const char *key = zpl_key(start, secret ? "secret-key" : "public-key");
        if (key) {
            memcpy(zpl, key, KEYFILE_KEY_LEN + 1);
            break;
        }
        if (first) {
            size_t len = strcspn(start, " \t");
            start[len] = '\0';
            if (keyfile_is_key(start))
                memcpy(bare, start, KEYFILE_KEY_LEN + 1);
        }
        first = false;
    }
    fclose(f);
    const char *key = zpl[0] ? zpl : bare;
    if (!key[0]) {
        snprintf(err, errlen, "key file %s: no CURVE key in it (expected a line of 40 Z85 "
                 "characters as smartshop-broker --keygen writes, or a ZeroMQ certificate's "
                 "%s line)", path, secret ? "secret-key" : "public-key");
        return -1;
    }
    memcpy(out, key, KEYFILE_KEY_LEN + 1);
    return 0;
}

int keyfile_format(char *buf, size_t len, const char *public_key, const char *secret_key)
{
    int n;
    if (secret_key)
        n = snprintf(buf, len,
                     "#   ZeroMQ CURVE **Secret** Certificate (smartshop-broker --keygen)\n"
                     "#   Keep it secret: mode 600, never copied to another host.\n"
                     "#   The next line is the secret key; the curve section repeats the\n"
                     "#   pair for ZeroMQ's readers (pyzmq's zmq.auth.load_certificate).\n"
                     "%s\n"
                     "curve\n"
                     "    public-key = \"%s\"\n"
                     "    secret-key = \"%s\"\n",
                     secret_key, public_key, secret_key);
    else
        n = snprintf(buf, len,
                     "#   ZeroMQ CURVE Public Certificate (smartshop-broker --keygen)\n"
                     "#   The next line is the public key; the curve section repeats it\n"
                     "#   for ZeroMQ's readers (pyzmq's zmq.auth.load_certificate).\n"
                     "%s\n"
                     "curve\n"
                     "    public-key = \"%s\"\n",
                     public_key, public_key);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}
