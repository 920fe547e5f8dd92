/* version: the broker's release and the protocol version it speaks. */
#ifndef SMARTSHOP_VERSION_H
#define SMARTSHOP_VERSION_H

#define SMARTSHOP_VERSION "0.1.0"
#define SMARTSHOP_PROTOCOL_VERSION 1
#define TTL_MAX_DEFAULT_MS 300000

#endif
