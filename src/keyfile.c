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
    char line[256];
    int rc = -1;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        keyfile_strip_comment(line);
        char *start = line + strspn(line, " \t");
        size_t len = strcspn(start, " \t");
        if (len == 0)
            continue;
        start[len] = '\0';
        if (keyfile_is_key(start)) {
            memcpy(out, start, KEYFILE_KEY_LEN + 1);
            rc = 0;
        }
        break;
    }
    fclose(f);
    if (rc < 0)
        snprintf(err, errlen, "key file %s: no CURVE key in it (expected one line of 40 Z85 "
                 "characters, as smartshop-broker --keygen writes)", path);
    return rc;
}
