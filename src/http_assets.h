/* http_assets: the dashboard's files (web/), compiled into the broker by
 * src/embed_assets.cmake, so that the page needs nothing installed beside
 * the program and nothing from the internet. */
#ifndef SMARTSHOP_HTTP_ASSETS_H
#define SMARTSHOP_HTTP_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *path;           /* "/index.html" */
    const char *content_type;
    const unsigned char *data;
    size_t len;
} http_asset_t;

extern const http_asset_t http_assets[];
extern const size_t http_asset_count;

#endif
